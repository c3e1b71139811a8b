// The API fuzzer with a fixed budget: every operation of /openapi.json, valid and mutated, by
// every kind of caller, over real HTTP. No answer is a 5xx, every error is problem+json of the
// API.md shape, and a refused write leaves the database as it was. The seed is printed on
// failure; rerun it with `node scripts/chaos/fuzz-api.ts --seed N`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import { databaseFingerprint, fuzzApi, summary, type FuzzWorld } from '../../../scripts/chaos/api-fuzz.ts';
import { cleanupKeys, makeWorld, sshPublicKey, testApp, type TestApp } from './helpers.js';

const SEED = Number(process.env.PLANETLITE_FUZZ_SEED ?? 0x5eed) >>> 0;
const REQUESTS = Number(process.env.PLANETLITE_FUZZ_REQUESTS ?? 2500);

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
