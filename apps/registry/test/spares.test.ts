// A node's warm pool: its agent lists the spare slivers it keeps ready (built, running, in no
// slice) in its observed-state reports, and a new sliver there of a slice whose published image
// and kind match one is given that spare's id, so the agent hands the spare out. A spare is
// given once; one whose id is already a sliver's is never given; a report that changes only the
// pool is written even when the replica would take it from memory (ReportMemo).
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReportMemo } from '../src/services/report-memo.js';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const caps = { lxc: true, kvm: false, kvm_accel: null };

let t: TestApp;
let w: World;
/** The archive sha256 of each image published here, by name. */
const sha: Record<string, string> = {};

async function publish(name: string, kinds = 'lxc'): Promise<void> {
  const r = await t.app.inject({
    method: 'POST',
    url: `/v1/images?name=${name}&kinds=${kinds}`,
    headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${w.admin}` },
    // gzip's magic first: an archive as the registry takes it.
    payload: Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(4096)]),
  });
  expect(r.statusCode, r.body).toBe(201);
  sha[name] = r.json().sha256;
  expect(sha[name]).toMatch(/^[0-9a-f]{64}$/);
}

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app);
  await publish('sparea');
  await publish('spareb');
});
afterAll(() => t.close());

let hosts = 0;
/** A node of its own for each test, so that one test's spares are not another's. */
async function enroll(): Promise<{ id: string; key: string }> {
  const token = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {});
  const n = await ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, {
    token: token.token,
    hostname: `spare${++hosts}.${w.site}.test`,
    address: '192.0.2.30',
    capabilities: caps,
    resources: { cpus: 4, memory_mb: 8192, disk_mb: 40000 },
  });
  return { id: n.node_id, key: n.node_key };
}

let slices = 0;
/** A new slice of site a on this image (lxc unless told). */
async function slice(image: string, kind = 'lxc'): Promise<string> {
  const name = `${w.site}_sp${++slices}`;
  await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'spares', url: 'https://example.org/spares', image, kind });
  return name;
}

const spare = (image: string, id = randomUUID()) => ({ id, image, image_sha256: sha[image]!, kind: 'lxc' });
const report = (node: { id: string; key: string }, body: object) => call(t.app, 'PUT', `/v1/nodes/${node.id}/observed-state`, node.key, { capabilities: caps, slivers: [], ...body });
async function place(node: { id: string }, sliceName: string): Promise<string> {
  return (await ok(t.app, 202, 'POST', `/v1/slices/${sliceName}/slivers`, w.pi, { node_id: node.id })).id as string;
}
async function storedSpares(node: { id: string }): Promise<Array<{ id: string }>> {
  const { rows } = await t.db.query<{ spares: Array<{ id: string }> }>('SELECT spares FROM nodes WHERE id = $1', [node.id]);
  return rows[0]!.spares;
}

describe('spare slivers of a node (warm pool)', () => {
  it('gives a new sliver the id of a spare of its image and kind, once', async () => {
    const node = await enroll();
    const s = spare('sparea');
    expect((await report(node, { spares: [s] })).status).toBe(200);
    expect(await storedSpares(node)).toEqual([s]);
    // The node shows how many it keeps ready.
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${node.id}`, w.admin)).spares).toBe(1);
    const first = await place(node, await slice('sparea'));
    expect(first).toBe(s.id);
    expect(await storedSpares(node)).toEqual([]);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${node.id}`, w.admin)).spares).toBe(0);
    // The agent has not reported since: the spare is not given twice.
    const second = await place(node, await slice('sparea'));
    expect(second).toMatch(UUID);
    expect(second).not.toBe(s.id);
    // The sliver is the node's under the spare's id, in its desired state.
    const doc = await ok(t.app, 200, 'GET', `/v1/nodes/${node.id}/desired-state`, node.key);
    expect(doc.slivers.map((x: { id: string }) => x.id).sort()).toEqual([first, second].sort());
  });

  it('gives no spare of another image or another kind; a published image is matched by sha256, an unpublished one by name', async () => {
    const node = await enroll();
    const other = spare('spareb');
    const vm = { ...spare('sparea'), kind: 'kvm' };
    // Named as the published image, but of another archive (an older import on the node).
    const stale = { ...spare('sparea'), image_sha256: createHash('sha256').update('older').digest('hex') };
    const unpublished = { id: randomUUID(), image: 'debian12', image_sha256: createHash('sha256').update('debian12').digest('hex'), kind: 'lxc' };
    expect((await report(node, { spares: [other, vm, stale, unpublished] })).status).toBe(200);
    const id = await place(node, await slice('sparea'));
    expect([other.id, vm.id, stale.id, unpublished.id]).not.toContain(id);
    // Unused spares stay listed.
    expect(await storedSpares(node)).toEqual([other, vm, stale, unpublished]);
    // The spare of that other image goes to a slice of it.
    expect(await place(node, await slice('spareb'))).toBe(other.id);
    // The slice of an image the registry has not published (only imported on nodes): by name.
    expect(await place(node, await slice('debian12'))).toBe(unpublished.id);
    expect(await storedSpares(node)).toEqual([vm, stale]);
  });

  it('skips a spare whose id is already a sliver, and drops it from the list', async () => {
    const node = await enroll();
    // A stale report (or a node that lies) lists the world's sliver, on another node, as a spare.
    const taken = spare('sparea', w.ids.sliver);
    const good = spare('sparea');
    expect((await report(node, { spares: [taken, good] })).status).toBe(200);
    expect(await place(node, await slice('sparea'))).toBe(good.id);
    expect(await storedSpares(node)).toEqual([]);
    // Only the taken one listed: a random id, no error, and the list is emptied of it.
    expect((await report(node, { spares: [taken] })).status).toBe(200);
    expect(await storedSpares(node)).toEqual([taken]);
    const id = await place(node, await slice('sparea'));
    expect(id).toMatch(UUID);
    expect([taken.id, good.id]).not.toContain(id);
    expect(await storedSpares(node)).toEqual([]);
    expect((await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.admin)).node_id).toBe(w.ids.node);
  });

  it('writes a report that changes only the spares, though it would be taken from memory otherwise', async () => {
    const memo = t.app.ctx.reports as ReportMemo;
    expect(memo).toBeTruthy();
    const node = await enroll();
    // The node's poll: its document is remembered, so a repeated report is taken from memory.
    await ok(t.app, 200, 'GET', `/v1/nodes/${node.id}/desired-state`, node.key);
    expect((await report(node, {})).status).toBe(200);
    const absorbed = memo.stats.absorbed;
    expect((await report(node, {})).status).toBe(200);
    expect(memo.stats.absorbed).toBe(absorbed + 1);
    const s = spare('sparea');
    expect((await report(node, { spares: [s] })).status).toBe(200);
    expect(memo.stats.absorbed).toBe(absorbed + 1);
    expect(await storedSpares(node)).toEqual([s]);
    // Said again: from memory, and still listed.
    expect((await report(node, { spares: [s] })).status).toBe(200);
    expect(memo.stats.absorbed).toBe(absorbed + 2);
    // A report without spares: the node keeps none now.
    expect((await report(node, {})).status).toBe(200);
    expect(memo.stats.absorbed).toBe(absorbed + 2);
    expect(await storedSpares(node)).toEqual([]);
    expect((await report(node, { spares: [s] })).status).toBe(200);
    expect(await place(node, await slice('sparea'))).toBe(s.id);
  });

  it('refuses a report whose spare is not well formed with 400, storing nothing of it', async () => {
    const node = await enroll();
    const good = spare('sparea');
    expect((await report(node, { spares: [good] })).status).toBe(200);
    const bad = [
      { ...good, id: 'not-a-uuid' },
      { ...good, id: good.id.toUpperCase() },
      { ...good, image_sha256: good.image_sha256.toUpperCase() },
      { ...good, image_sha256: 'abc' },
      { ...good, kind: 'vm' },
      { ...good, extra: 1 },
    ];
    for (const b of bad) {
      const r = await report(node, { spares: [b] });
      expect(r.status, JSON.stringify(b)).toBe(400);
      expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(r.body).toMatchObject({ status: 400, code: 'invalid_request' });
      expect(r.body.detail).toMatch(/spares/);
    }
    expect(await storedSpares(node)).toEqual([good]);
  });
});
