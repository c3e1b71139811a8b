// What the dashboard needs of the public API beyond the contract's first version: nodes say how
// many slivers they hold and how many ports are free, and the event list gives the newest events.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, makeWorld, testApp, type TestApp, type World } from './helpers.js';

let t: TestApp;
let w: World;

beforeAll(async () => {
  t = await testApp({ config: { portsPerSliver: 10 } });
  w = await makeWorld(t.app);
});
afterAll(async () => t?.close());

describe('for the dashboard', () => {
  it('a node lists its slivers and free ports, in the list and alone', async () => {
    const one = await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user);
    const window = one.port_window.last - one.port_window.first + 1;
    expect(one.slivers).toBe(1);
    expect(one.free_ports).toBe(window - 10);
    const list = await ok(t.app, 200, 'GET', '/v1/nodes', w.user);
    const b = list.nodes.find((n: { id: string }) => n.id === w.ids.nodeB);
    expect(b.slivers).toBe(0);
    expect(b.free_ports).toBe(b.port_window.last - b.port_window.first + 1);
  });

  it('newest=true gives the newest events, still oldest first', async () => {
    const all = (await ok(t.app, 200, 'GET', '/v1/events?limit=1000', w.admin)).events as Array<{ id: number }>;
    expect(all.length).toBeGreaterThan(3);
    const newest = (await ok(t.app, 200, 'GET', '/v1/events?limit=2&newest=true', w.admin)).events as Array<{ id: number }>;
    expect(newest.map((e) => e.id)).toEqual(all.slice(-2).map((e) => e.id));
    const oldest = (await ok(t.app, 200, 'GET', '/v1/events?limit=2', w.admin)).events as Array<{ id: number }>;
    expect(oldest.map((e) => e.id)).toEqual(all.slice(0, 2).map((e) => e.id));
  });
});
