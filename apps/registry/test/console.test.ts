// Node capabilities learnt after enrollment (reported with the observed state) and what placement
// makes of them; a sliver's console log: the node uploads its tail, the slice reads it.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SLIVER_CONSOLE_MAX_BYTES, consoleTail } from '@planetlite/api';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

let t: TestApp;
let w: World;

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app);
});
afterAll(() => t.close());

const TEXT = { 'content-type': 'text/plain; charset=utf-8' };
const consoleUrl = (node: string, sliver: string) => `/v1/nodes/${node}/slivers/${sliver}/console`;

function upload(text: string, opts: { node?: string; key?: string | null; sliver?: string; headers?: Record<string, string> } = {}) {
  return call(t.app, 'PUT', consoleUrl(opts.node ?? w.ids.node, opts.sliver ?? w.ids.sliver), opts.key === undefined ? w.node : opts.key, text, opts.headers ?? TEXT);
}

function expectProblem(r: { status: number; body: any; headers: Record<string, unknown> }, status: number, code: string, detail?: RegExp): void {
  expect(r.status, JSON.stringify(r.body)).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(r.body).toMatchObject({ status, code, type: `urn:planetlite:problem:${code}` });
  if (detail) expect(r.body.detail).toMatch(detail);
}

describe('node capabilities in observed-state reports', () => {
  let node: { node_id: string; node_key: string };
  const hostname = () => `kvm1.${w.site}.test`;
  const report = (capabilities?: unknown) =>
    call(t.app, 'PUT', `/v1/nodes/${node.node_id}/observed-state`, node.node_key, { slivers: [], ...(capabilities === undefined ? {} : { capabilities }) });
  const capabilityEvents = async () =>
    (await ok(t.app, 200, 'GET', `/v1/events?node=${node.node_id}&type=node.capabilities`, w.admin)).events as Array<{ data: unknown }>;
  const place = (slice: string) => call(t.app, 'POST', `/v1/slices/${slice}/slivers`, w.pi, { node_id: node.node_id });

  beforeAll(async () => {
    // Enrolled as a node whose qemu probe has not finished: no kvm yet.
    const token = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {});
    node = await ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, {
      token: token.token,
      hostname: hostname(),
      address: '192.0.2.20',
      capabilities: { lxc: true, kvm: false, kvm_accel: null },
      resources: { cpus: 4, memory_mb: 8192, disk_mb: 40000 },
    });
    for (const [suffix, kind] of [['vm1', 'kvm'], ['vm2', 'kvm'], ['ct1', 'lxc']] as const) {
      await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: `${w.site}_${suffix}`, description: 'd', url: 'u', kind });
    }
  });

  it('a node enrolled without kvm refuses a kvm sliver, naming the node and what it lacks', async () => {
    const r = await place(`${w.site}_vm1`);
    expectProblem(r, 409, 'node_incapable');
    expect(r.body.detail).toContain(hostname());
    expect(r.body.detail).toContain(node.node_id);
    expect(r.body.detail).toMatch(/cannot run kvm slivers: .*\(kvm: false\)/);
  });

  it('kvm without an accelerator yet changes GET /v1/nodes/{id}, but a kvm sliver is still refused', async () => {
    expect((await report({ lxc: true, kvm: true, kvm_accel: null })).status).toBe(200);
    const shown = await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}`, w.user);
    expect(shown.capabilities).toEqual({ lxc: true, kvm: true, kvm_accel: null });
    const r = await place(`${w.site}_vm1`);
    expectProblem(r, 409, 'node_incapable', /kvm_accel: null/);
    expect(r.body.detail).toContain(hostname());
    expect((await capabilityEvents()).map((e) => e.data)).toEqual([{ from: { lxc: true, kvm: false, kvm_accel: null }, to: { lxc: true, kvm: true, kvm_accel: null } }]);
  });

  it('an accelerator lets kvm slivers be placed; an unchanged report writes and records nothing', async () => {
    expect((await report({ lxc: true, kvm: true, kvm_accel: 'tcg' })).status).toBe(200);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}`, w.user)).capabilities).toEqual({ lxc: true, kvm: true, kvm_accel: 'tcg' });
    const sliver = await ok(t.app, 202, 'POST', `/v1/slices/${w.site}_vm1/slivers`, w.pi, { node_id: node.node_id });
    expect(sliver).toMatchObject({ kind: 'kvm', node_id: node.node_id, state: 'pending' });
    const doc = await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}/desired-state`, node.node_key);
    expect(doc.slivers.map((s: { id: string; kind: string }) => [s.id, s.kind])).toEqual([[sliver.id, 'kvm']]);

    expect(await capabilityEvents()).toHaveLength(2);
    await report({ kvm_accel: 'tcg', kvm: true, lxc: true }); // same, in another key order
    await report(); // a report without capabilities leaves them alone
    expect(await capabilityEvents()).toHaveLength(2);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}`, w.user)).capabilities).toEqual({ lxc: true, kvm: true, kvm_accel: 'tcg' });
  });

  it('a node that loses a capability refuses new slivers of that kind', async () => {
    await report({ lxc: false, kvm: true, kvm_accel: 'kvm' });
    expectProblem(await place(`${w.site}_ct1`), 409, 'node_incapable', /cannot run lxc slivers: .*\(lxc: false\)/);
    expect((await place(`${w.site}_vm2`)).status).toBe(202);
    await report({ lxc: false, kvm: false, kvm_accel: null });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}`, w.user)).capabilities).toEqual({ lxc: false, kvm: false, kvm_accel: null });
    expect(await capabilityEvents()).toHaveLength(4);
  });

  it('refuses malformed capabilities with 400 naming the field, and changes nothing', async () => {
    const before = (await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}`, w.user)).capabilities;
    expectProblem(await report({ lxc: true, kvm: true, kvm_accel: 'hvf' }), 400, 'invalid_request', /capabilities\.kvm_accel/);
    expectProblem(await report({ lxc: true, kvm: true }), 400, 'invalid_request', /capabilities must have field 'kvm_accel'/);
    expectProblem(await report({ lxc: true, kvm: true, kvm_accel: null, gpu: true }), 400, 'invalid_request', /unknown field 'gpu'/);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}`, w.user)).capabilities).toEqual(before);
  });
});

describe('images and placement', () => {
  let node: { node_id: string; node_key: string };
  const publish = async (name: string, kinds: string, arch: string) => {
    const r = await t.app.inject({
      method: 'POST',
      url: `/v1/images?name=${name}&kinds=${kinds}&arch=${arch}`,
      headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${w.admin}` },
      payload: Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(4096)]),
    });
    expect(r.statusCode, r.body).toBe(201);
  };
  const slice = (suffix: string, kind: string, image: string) =>
    call(t.app, 'POST', '/v1/slices', w.pi, { name: `${w.site}_${suffix}`, description: 'd', url: 'u', kind, image });
  const place = (suffix: string) => call(t.app, 'POST', `/v1/slices/${w.site}_${suffix}/slivers`, w.pi, { node_id: node.node_id });
  const report = (arch?: string) =>
    call(t.app, 'PUT', `/v1/nodes/${node.node_id}/observed-state`, node.node_key, { slivers: [], capabilities: { lxc: true, kvm: true, kvm_accel: 'tcg', ...(arch ? { arch } : {}) } });

  beforeAll(async () => {
    await publish('ctonly', 'lxc', 'x86_64');
    await publish('armboth', 'lxc,kvm', 'aarch64');
    const token = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {});
    node = await ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, {
      token: token.token,
      hostname: `img1.${w.site}.test`,
      address: '192.0.2.21',
      capabilities: { lxc: true, kvm: true, kvm_accel: 'tcg', arch: 'x86_64' },
      resources: { cpus: 4, memory_mb: 8192, disk_mb: 40000 },
    });
  });

  it('refuses a slice of a kind its published image does not serve, and makes nothing', async () => {
    expectProblem(await slice('imgvm', 'kvm', 'ctonly'), 409, 'image_incompatible', /image ctonly serves lxc slivers, not kvm/);
    expect((await call(t.app, 'GET', `/v1/slices/${w.site}_imgvm`, w.pi)).status).toBe(404);
    expect((await slice('imgct', 'lxc', 'ctonly')).status).toBe(201);
    expect((await place('imgct')).status).toBe(202);
  });

  it('leaves alone an image the registry has not published (it may be imported on nodes)', async () => {
    expect((await slice('imglocal', 'kvm', 'only-on-nodes')).status).toBe(201);
    expect((await place('imglocal')).status).toBe(202);
  });

  it('checks at placement an image published after its slice was made', async () => {
    expect((await slice('imglate', 'kvm', 'latecomer')).status).toBe(201);
    await publish('latecomer', 'lxc', 'x86_64');
    expectProblem(await place('imglate'), 409, 'image_incompatible', /image latecomer serves lxc slivers, not kvm/);
  });

  it('places no sliver of an image of another architecture than the node reports', async () => {
    expect((await slice('imgarm', 'kvm', 'armboth')).status).toBe(201);
    expectProblem(await place('imgarm'), 409, 'node_incapable', /it is x86_64 and image armboth is aarch64/);
    // A node that reports no architecture (an older agent) is not held to one.
    expect((await report()).status).toBe(200);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${node.node_id}`, w.user)).capabilities).toEqual({ lxc: true, kvm: true, kvm_accel: 'tcg' });
    await report('aarch64');
    expect((await place('imgarm')).status).toBe(202);
  });
});

describe('sliver console log', () => {
  const read = (token: string | null, sliver = w.ids.sliver) => call(t.app, 'GET', `/v1/slivers/${sliver}/console`, token);

  it('is 404 with a clear detail until the node uploads one', async () => {
    expectProblem(await read(w.user), 404, 'not_found', new RegExp(`^no console log for sliver ${w.ids.sliver} yet: the node uploads it once the sliver has started$`));
    // An unknown sliver says so instead.
    expectProblem(await read(w.user, '00000000-0000-4000-8000-000000000000'), 404, 'not_found', /^sliver 00000000-0000-4000-8000-000000000000 not found$/);
  });

  it('the node uploads text/plain, and slice members, the site pi and admins read it', async () => {
    const text = 'SeaBIOS (version 1.16)\r\n[    0.000000] Linux version 6.1.0\r\nDebian GNU/Linux 12 sliver ttyS0\r\n\r\nlogin: ✓ ';
    const before = Date.now();
    const r = await upload(text);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toEqual({ sliver_id: w.ids.sliver, bytes: Buffer.byteLength(text), updated_at: expect.any(String) });
    expect(Date.parse(r.body.updated_at)).toBeGreaterThanOrEqual(before - 1000);

    for (const who of [w.user, w.pi, w.admin]) {
      const got = await read(who);
      expect(got.status).toBe(200);
      expect(got.headers['content-type']).toMatch(/^application\/json/);
      expect(got.body).toEqual({ sliver_id: w.ids.sliver, text, updated_at: r.body.updated_at });
    }
  });

  it('each upload replaces the one before; NUL characters are dropped, invalid UTF-8 is replaced', async () => {
    expect((await upload('first boot\n')).status).toBe(200);
    const second = await upload('second\u0000 boot\n');
    expect(second.body.bytes).toBe('second boot\n'.length);
    expect((await read(w.user)).body.text).toBe('second boot\n');
    const raw = await t.app.inject({
      method: 'PUT',
      url: consoleUrl(w.ids.node, w.ids.sliver),
      headers: { authorization: `Bearer ${w.node}`, 'content-type': 'text/plain' },
      payload: Buffer.from([0x6f, 0x6b, 0xff, 0x0a]),
    });
    expect(raw.statusCode).toBe(200);
    expect((await read(w.user)).body.text).toBe('ok\ufffd\n');
    const { rows } = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM sliver_console WHERE sliver_id = $1', [w.ids.sliver]);
    expect(rows[0]!.n).toBe(1);
  });

  it('is not for anyone outside the slice, its site pi and admins', async () => {
    expectProblem(await read(w.outsider), 403, 'forbidden');
    expectProblem(await read(w.otherPi), 403, 'forbidden');
    expectProblem(await read(w.tech), 403, 'forbidden');
    expectProblem(await read(w.node), 403, 'forbidden'); // a node key reads no user paths
    expectProblem(await read(null), 401, 'unauthorized');
  });

  it('takes exactly 64 KiB; more is 413 problem+json, whether declared or streamed', async () => {
    const max = 'x'.repeat(SLIVER_CONSOLE_MAX_BYTES - 3) + '✓'; // a 3-byte character at the very end
    const fits = await upload(max);
    expect(fits.status).toBe(200);
    expect(fits.body.bytes).toBe(SLIVER_CONSOLE_MAX_BYTES);

    const over = await upload(`${max}!`);
    expectProblem(over, 413, 'payload_too_large', new RegExp(`larger than ${SLIVER_CONSOLE_MAX_BYTES} bytes`));
    // Without a Content-Length the body limit stops it while reading.
    const streamed = await t.app.inject({
      method: 'PUT',
      url: consoleUrl(w.ids.node, w.ids.sliver),
      headers: { authorization: `Bearer ${w.node}`, 'content-type': 'text/plain', 'transfer-encoding': 'chunked' },
      payload: Readable.from([Buffer.alloc(40_000, 0x61), Buffer.alloc(40_000, 0x62)]),
    });
    expect(streamed.statusCode).toBe(413);
    expect(JSON.parse(streamed.body)).toMatchObject({ status: 413, code: 'payload_too_large' });
    expect((await read(w.user)).body.text).toBe(max);

    // consoleTail cuts a long log to what fits, on a character boundary.
    const tail = consoleTail(`${'é'.repeat(40_000)}end`);
    expect(Buffer.byteLength(tail)).toBeLessThanOrEqual(SLIVER_CONSOLE_MAX_BYTES);
    expect(tail.endsWith('end')).toBe(true);
    expect(tail).not.toContain('\ufffd');
    expect((await upload(tail)).status).toBe(200);
  });

  it('takes only text/plain, and refuses a stranger before reading a large body', async () => {
    expectProblem(await upload('{"text":"x"}', { headers: { 'content-type': 'application/json' } }), 415, 'unsupported_media_type', /text\/plain/);
    expectProblem(await upload('x'.repeat(SLIVER_CONSOLE_MAX_BYTES + 1), { key: null }), 401, 'unauthorized');
    expectProblem(await upload('x'.repeat(SLIVER_CONSOLE_MAX_BYTES + 1), { key: w.nodeB }), 403, 'forbidden');
  });

  it('only the sliver\'s own node uploads it', async () => {
    // Another node's key on this node's path, and a user token.
    expectProblem(await upload('spoof', { key: w.nodeB }), 403, 'forbidden', /own node/);
    expectProblem(await upload('spoof', { key: w.pi }), 403, 'forbidden');
    expectProblem(await upload('spoof', { key: 'ple_bogus' }), 401, 'token_invalid');
    // Another node's own path, naming a sliver that is not on it.
    expectProblem(await upload('spoof', { node: w.ids.nodeB, key: w.nodeB }), 404, 'not_found', new RegExp(`sliver ${w.ids.sliver} is not on node ${w.ids.nodeB}`));
    expectProblem(await upload('x', { sliver: '00000000-0000-4000-8000-000000000000' }), 404, 'not_found');
    expectProblem(await upload('x', { sliver: 'not-a-uuid' }), 400, 'invalid_request', /params\.sliver_id/);
    expect((await read(w.user)).body.text).not.toBe('spoof');
  });

  it('goes with its sliver', async () => {
    const slice = `${w.site}_gone`;
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: slice, description: 'd', url: 'u' });
    const sliver = await ok(t.app, 202, 'POST', `/v1/slices/${slice}/slivers`, w.pi, { node_id: w.ids.node });
    expect((await upload('about to go\n', { sliver: sliver.id })).status).toBe(200);
    await ok(t.app, 202, 'DELETE', `/v1/slivers/${sliver.id}`, w.pi);
    // Still readable while deleting; gone once the node's report no longer has the sliver.
    expect((await read(w.pi, sliver.id)).body.text).toBe('about to go\n');
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [{ id: w.ids.sliver, state: 'running' }] });
    expectProblem(await read(w.pi, sliver.id), 404, 'not_found', /sliver .* not found/);
    const { rows } = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM sliver_console WHERE sliver_id = $1', [sliver.id]);
    expect(rows[0]!.n).toBe(0);
    // The world's sliver keeps its own.
    expect((await read(w.user)).status).toBe(200);
  });

  it('is in the OpenAPI document', async () => {
    const doc = (await call(t.app, 'GET', '/openapi.json')).body;
    expect(doc.paths['/v1/slivers/{id}/console'].get.responses['200']).toBeDefined();
    const put = doc.paths['/v1/nodes/{id}/slivers/{sliver_id}/console'].put;
    expect(Object.keys(put.requestBody.content)).toEqual(['text/plain']);
  });
});
