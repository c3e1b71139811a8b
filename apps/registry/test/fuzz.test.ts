// The API fuzzer with a fixed budget: every operation of /openapi.json, valid and mutated, by
// every kind of caller, over real HTTP. No answer is a 5xx, every error is problem+json of the
// API.md shape, and a refused write leaves the database as it was. The seed is printed on
// failure; rerun it with `node scripts/chaos/fuzz-api.ts --seed N`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import { databaseFingerprint, fuzzApi, summary, type FuzzWorld } from '../../../scripts/chaos/api-fuzz.ts';
import { call, cleanupKeys, makeWorld, ok, sshPublicKey, testApp, type TestApp } from './helpers.js';

const SEED = Number(process.env.PLANETLITE_FUZZ_SEED ?? 0x5eed) >>> 0;
const REQUESTS = Number(process.env.PLANETLITE_FUZZ_REQUESTS ?? 1500);

let t: TestApp;
let world: FuzzWorld;
let baseUrl: string;

beforeAll(async () => {
  t = await testApp();
  const w = await makeWorld(t.app);
  world = {
    tokens: { admin: w.admin, pi: w.pi, user: w.user, node: w.node }, site: w.site, slice: w.slice, sliver: w.ids.sliver, node: w.ids.node, user: w.ids.user,
    sshKey: sshPublicKey('fuzz@planetlite'),
  };
  await t.app.listen({ host: '127.0.0.1', port: 0 });
  baseUrl = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await t?.close();
  cleanupKeys();
});

describe('API fuzzer', () => {
  it(`survives ${REQUESTS} seeded requests over every operation`, async () => {
    const rep = await fuzzApi({ baseUrl, seed: SEED, requests: REQUESTS, world, fingerprint: await databaseFingerprint(t.db) });
    const line = summary(rep);
    console.log(line);
    console.log(Object.entries(rep.secondsByOperation).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join('; '));
    const shown = rep.findings.slice(0, 15).map((f) => `${f.kind} ${f.status} ${f.request}\n    ${f.detail}`).join('\n');
    expect({ serverErrors: rep.serverErrors, notProblem: rep.notProblem, changedOnRefusal: rep.changedOnRefusal, hangUps: rep.transportErrors }, `${line}\n${shown}`)
      .toEqual({ serverErrors: 0, notProblem: 0, changedOnRefusal: 0, hangUps: 0 });
    expect(rep.operations).toBeGreaterThan(40);
    // Some calls must get through, or the fuzzer only ever tested the front door.
    expect(Object.entries(rep.statuses).filter(([s]) => Number(s) < 300).reduce((n, [, c]) => n + c, 0)).toBeGreaterThan(REQUESTS / 10);
  }, 300_000);
});

/** The classes the fuzzer first found, one request each, so that each stays fixed whatever the seed. */
describe('values the schemas once let through to the database', () => {
  const problem = async (method: string, url: string, token: string | null, body?: unknown, headers: Record<string, string> = {}) => {
    const r = await call(t.app, method, url, token, body, headers);
    expect(r.status, `${method} ${url} → ${JSON.stringify(r.body)}`).toBeGreaterThanOrEqual(400);
    expect(r.status, `${method} ${url} → ${JSON.stringify(r.body)}`).toBeLessThan(500);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    return r;
  };

  it('other spellings of a uuid are a 400 naming the parameter', async () => {
    for (const id of [`urn:uuid:${world.sliver}`, `{${world.sliver}}`, world.sliver.replace(/-/g, ''), world.sliver.toUpperCase()]) {
      const r = await problem('GET', `/v1/slivers/${encodeURIComponent(id)}`, world.tokens.admin);
      expect(r.body.detail).toMatch(/params\.id/);
    }
    const r = await problem('POST', `/v1/slices/${world.slice}/members`, world.tokens.admin, { user_id: `urn:uuid:${world.user}` });
    expect(r.body.detail).toMatch(/user_id/);
  });

  it('numbers and dates outside what the columns hold are 400s', async () => {
    await problem('GET', '/v1/events?after=100000000000000000000', world.tokens.admin);
    for (const since of ['0000-01-01T00:00:00Z', '9999-12-31T23:59:60Z', '2024-02-30T00:00:00Z']) {
      const r = await problem('GET', `/v1/slivers/${world.sliver}/usage?since=${encodeURIComponent(since)}`, world.tokens.admin);
      expect(r.body.detail).toMatch(/since/);
    }
    await problem('POST', `/v1/slices/${world.slice}/renew`, world.tokens.admin, { expires_at: '0000-01-01T00:00:00Z' });
  });

  it('text that jsonb or text columns cannot hold is refused from users, naming the field', async () => {
    for (const description of ['a\u0000b', 'cut \ud83d', '\udc00']) {
      const r = await problem('PATCH', `/v1/slices/${world.slice}`, world.tokens.pi, { description });
      expect(r.body.detail).toMatch(/body\.description/);
    }
    const q = await problem('GET', `/v1/events?slice=${encodeURIComponent('x\u0000')}`, world.tokens.admin);
    expect(q.body.detail).toMatch(/querystring\.slice/);
  });

  it('structures nested too deep to store or serialise are a 400', async () => {
    const deep = `${'{"d":'.repeat(5000)}1${'}'.repeat(5000)}`;
    const r = await problem('POST', `/v1/nodes/${world.node}/events`, world.tokens.node, `{"type":"fuzz.deep","data":${deep}}`);
    expect(r.body.detail).toMatch(/deeper/);
    await problem('POST', '/v1/slices', world.tokens.pi, '['.repeat(100_000));
  });

  it('a Last-Event-ID beyond the event ids and a refused stream filter are answered before the stream starts', async () => {
    const r = await problem('GET', `/v1/events/stream?node=${encodeURIComponent(`urn:uuid:${world.node}`)}`, world.tokens.admin);
    expect(r.body.detail).toMatch(/querystring\.node/);
  });
});

describe('hostile strings from node agents', () => {
  it('a report whose error was cut inside a character, or carries NUL, is kept with the text mended', async () => {
    const cut = 'lxc-start failed: ' + '😀'.repeat(3).slice(0, 5); // ends in half a surrogate pair
    const r = await call(t.app, 'PUT', `/v1/nodes/${world.node}/observed-state`, world.tokens.node, {
      slivers: [{ id: world.sliver, state: 'failed', error: `${cut}\u0000 and \udc00 more` }],
      images: [{ image: 'tiny\u0000', state: 'ready\ud800', bytes_from_peers: 0, bytes_from_webseed: 0 }],
    });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const sliver = await ok(t.app, 200, 'GET', `/v1/slivers/${world.sliver}`, world.tokens.admin);
    expect(sliver.error).toBe(`lxc-start failed: 😀😀\ufffd and \ufffd more`);
  });

  it('an error longer than the registry keeps is cut at a character, not refused', async () => {
    const long = `${'x'.repeat(3999)}😀 and the rest`;
    const r = await call(t.app, 'PUT', `/v1/nodes/${world.node}/observed-state`, world.tokens.node, { slivers: [{ id: world.sliver, state: 'failed', error: long }] });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const sliver = await ok(t.app, 200, 'GET', `/v1/slivers/${world.sliver}`, world.tokens.admin);
    expect(sliver.error).toBe('x'.repeat(3999));
  });

  it('an event with NUL and unpaired surrogates in its data and keys is recorded, mended', async () => {
    const r = await call(t.app, 'POST', `/v1/nodes/${world.node}/events`, world.tokens.node, { type: 'watchdog.warning', data: { 'note\u0000': 'x\u0000y\ud800', list: ['\udfff'] } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.data).toEqual({ note: 'xy\ufffd', list: ['\ufffd'] });
  });
});
