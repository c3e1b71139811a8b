// A slice deleted with slivers on two nodes goes once both nodes confirm, even when their
// confirmations arrive at the same instant (each in its own transaction on PostgreSQL).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

let t: TestApp;
let w: World;

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app);
});
afterAll(() => t.close());

describe('deleting a slice with slivers on two nodes', () => {
  it('drops the slice when both nodes confirm at once, every time', async () => {
    for (let round = 0; round < 15; round++) {
      const name = `${w.site}_race${round}`;
      await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'race', url: 'https://example.org' });
      const a = await ok(t.app, 202, 'POST', `/v1/slices/${name}/slivers`, w.pi, { node_id: w.ids.node });
      const b = await ok(t.app, 202, 'POST', `/v1/slices/${name}/slivers`, w.pi, { node_id: w.ids.nodeB });
      await ok(t.app, 202, 'DELETE', `/v1/slices/${name}`, w.pi);
      const [ra, rb] = await Promise.all([
        call(t.app, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [{ id: a.id, state: 'deleted' }] }),
        call(t.app, 'PUT', `/v1/nodes/${w.ids.nodeB}/observed-state`, w.nodeB, { slivers: [{ id: b.id, state: 'deleted' }] }),
      ]);
      expect([ra.status, rb.status]).toEqual([200, 200]);
      expect((await call(t.app, 'GET', `/v1/slices/${name}`, w.pi)).status, `round ${round}: the slice is gone`).toBe(404);
      // The name is free again.
      await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'again', url: 'https://example.org' });
      await ok(t.app, 202, 'DELETE', `/v1/slices/${name}`, w.pi);
    }
  });
});
