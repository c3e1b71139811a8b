// Port ranges under load: hundreds of concurrent sliver creations on one node never overlap.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, login, ok, ADMIN, testApp, type TestApp } from './helpers.js';

const SLICES = 200;
let t: TestApp;
let admin: string;

async function enroll(site: string, hostname: string, window?: { first: number; last: number }): Promise<{ node_id: string; node_key: string }> {
  const tok = await ok(t.app, 201, 'POST', `/v1/sites/${site}/enrollment-tokens`, admin, {});
  const body = {
    token: tok.token, hostname, address: '192.0.2.20',
    capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 2, memory_mb: 2048, disk_mb: 4096 },
    ...(window ? { port_window: window } : {}),
  };
  return ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, body);
}

beforeAll(async () => {
  t = await testApp();
  admin = await login(t.app, ADMIN.email, ADMIN.password);
  await ok(t.app, 201, 'POST', '/v1/sites', admin, { login_base: 'busy', name: 'Busy', max_slices: 1000, max_slivers: 1000 });
  await Promise.all(
    Array.from({ length: SLICES }, (_, i) => ok(t.app, 201, 'POST', '/v1/slices', admin, { name: `busy_s${i}`, description: 'd', url: 'u' })),
  );
});
afterAll(() => t.close());

describe('port allocation', () => {
  it(`${SLICES} concurrent sliver creations on one node get disjoint ranges`, async () => {
    const node = (await enroll('busy', 'busy1.test')).node_id;
    const results = await Promise.all(
      Array.from({ length: SLICES }, (_, i) => call(t.app, 'POST', `/v1/slices/busy_s${i}/slivers`, admin, { node_id: node })),
    );
    expect(results.map((r) => r.status)).toEqual(Array(SLICES).fill(202));
    const ranges = results.map((r) => r.body.ports as { first: number; last: number }).sort((a, b) => a.first - b.first);
    for (let i = 0; i < ranges.length; i++) {
      const r = ranges[i]!;
      expect(r.last - r.first).toBe(9);
      expect(r.first).toBeGreaterThanOrEqual(20000);
      expect(r.last).toBeLessThanOrEqual(29999);
      if (i > 0) expect(r.first).toBeGreaterThan(ranges[i - 1]!.last);
    }
    // The ranges are packed: the allocator fills the window from its bottom.
    expect(ranges.at(-1)!.last).toBe(20000 + SLICES * 10 - 1);
  });

  it('a full window answers 409 port_window_exhausted, and a freed range is reused', async () => {
    const { node_id: node, node_key: nodeKey } = await enroll('busy', 'small.test', { first: 30000, last: 30034 });
    const made = await Promise.all(Array.from({ length: 5 }, (_, i) => call(t.app, 'POST', `/v1/slices/busy_s${i}/slivers`, admin, { node_id: node })));
    expect(made.map((r) => r.status).sort()).toEqual([202, 202, 202, 409, 409]);
    const refused = made.filter((r) => r.status === 409);
    for (const r of refused) expect(r.body.code).toBe('port_window_exhausted');
    const first = made.find((r) => r.status === 202 && r.body.ports.first === 30000)!.body;
    await ok(t.app, 202, 'DELETE', `/v1/slivers/${first.id}`, admin);
    // Still held while deleting; freed once the node confirms.
    expect((await call(t.app, 'POST', '/v1/slices/busy_s10/slivers', admin, { node_id: node })).body.code).toBe('port_window_exhausted');
    const kept = made.filter((r) => r.status === 202 && r.body.id !== first.id).map((r) => ({ id: r.body.id, state: 'running' }));
    await ok(t.app, 200, 'PUT', `/v1/nodes/${node}/observed-state`, nodeKey, { slivers: kept });
    const reused = await ok(t.app, 202, 'POST', '/v1/slices/busy_s10/slivers', admin, { node_id: node });
    expect(reused.ports).toEqual({ first: 30000, last: 30009 });
  });

  it('gives out the ports above the highest range while the window has room there, a freed range only then', async () => {
    const { node_id: node, node_key: nodeKey } = await enroll('busy', 'above.test', { first: 32000, last: 32049 });
    const make = (i: number) => call(t.app, 'POST', `/v1/slices/busy_s${i}/slivers`, admin, { node_id: node });
    const made = [];
    for (const i of [30, 31, 32]) made.push((await make(i)).body);
    expect(made.map((s) => s.ports.first)).toEqual([32000, 32010, 32020]);
    await ok(t.app, 202, 'DELETE', `/v1/slivers/${made[0].id}`, admin);
    await ok(t.app, 200, 'PUT', `/v1/nodes/${node}/observed-state`, nodeKey, { slivers: made.slice(1).map((s) => ({ id: s.id, state: 'running' })) });
    expect((await make(33)).body.ports).toEqual({ first: 32030, last: 32039 });
    expect((await make(34)).body.ports).toEqual({ first: 32040, last: 32049 });
    // The window's top is reached: the lowest free run, the range freed first.
    expect((await make(35)).body.ports).toEqual({ first: 32000, last: 32009 });
    expect((await make(36)).body.code).toBe('port_window_exhausted');
  });

  it('takes the lowest gap that fits once the top is reached, and passes over ranges outside the window or overlapping', async () => {
    const { node_id: node, node_key: nodeKey } = await enroll('busy', 'gaps.test', { first: 31000, last: 31039 });
    const make = (i: number) => ok(t.app, 202, 'POST', `/v1/slices/busy_s${i}/slivers`, admin, { node_id: node });
    const made = [];
    for (const i of [20, 21, 22, 23]) made.push(await make(i));
    expect(made.map((s) => s.ports.first)).toEqual([31000, 31010, 31020, 31030]);
    // The second is deleted and confirmed gone: its gap, between two taken ranges, is the lowest.
    await ok(t.app, 202, 'DELETE', `/v1/slivers/${made[1].id}`, admin);
    await ok(t.app, 200, 'PUT', `/v1/nodes/${node}/observed-state`, nodeKey, { slivers: [made[0], made[2], made[3]].map((s) => ({ id: s.id, state: 'running' })) });
    expect((await make(24)).ports).toEqual({ first: 31010, last: 31019 });
    // Odd ranges (left by a window that moved, or written by hand): one below the window that
    // reaches into it, and one inside another. Taken: 30990-31004, 31010-31019, 31011-31013,
    // 31030-31039; the one free run of 10 is 31020-31029 (not 31005, too short; not 31014: inside
    // 31010-31019).
    await t.db.query('UPDATE slivers SET port_first = 30990, port_last = 31004 WHERE id = $1', [made[0].id]);
    await t.db.query('UPDATE slivers SET port_first = 31011, port_last = 31013 WHERE id = $1', [made[2].id]);
    expect((await make(25)).ports).toEqual({ first: 31020, last: 31029 });
    expect((await call(t.app, 'POST', '/v1/slices/busy_s26/slivers', admin, { node_id: node })).body.code).toBe('port_window_exhausted');
  });

  it('a window too small for one sliver is refused at enrollment', async () => {
    const tok = await ok(t.app, 201, 'POST', '/v1/sites/busy/enrollment-tokens', admin, {});
    const r = await call(t.app, 'POST', '/v1/nodes/enroll', null, {
      token: tok.token, hostname: 'tiny.test', address: '192.0.2.21', port_window: { first: 40000, last: 40004 },
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 64, disk_mb: 64 },
    });
    expect(r.status).toBe(400);
    expect(r.body.detail).toMatch(/port_window/);
  });
});
