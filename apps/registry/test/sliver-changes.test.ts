// A sliver's actions and its teardown are one statement each (repositories/slivers.ts
// changeSliver): who may, the update, its event. Many at once, and an action racing a delete, on
// PostgreSQL (each request its own pooled connection) and on PGlite.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

let t: TestApp;
let w: World;

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app);
});
afterAll(() => t.close());

const doc = async (id: string) =>
  (await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node)).slivers.find((s: { id: string }) => s.id === id);
const eventsOf = async (id: string, type: string) =>
  (await ok(t.app, 200, 'GET', `/v1/events?type=${type}&slice=${w.slice}&limit=1000`, w.admin)).events.filter((e: { sliver: string }) => e.sliver === id);

describe('a new sliver', () => {
  it('is made with its event in the statement that checks the quota, once per slice and node', async () => {
    const name = `${w.site}_made`;
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'd', url: 'u' });
    const made = await ok(t.app, 202, 'POST', `/v1/slices/${name}/slivers`, w.pi, { node_id: w.ids.nodeB });
    expect(made).toEqual(await ok(t.app, 200, 'GET', `/v1/slivers/${made.id}`, w.pi));
    expect(made).toMatchObject({ slice: name, node_id: w.ids.nodeB, state: 'pending', desired: 'running', ssh: { port: made.ports.first, user: name } });
    const events = (await ok(t.app, 200, 'GET', `/v1/events?type=sliver.state&slice=${name}`, w.pi)).events;
    expect(events).toEqual([expect.objectContaining({ sliver: made.id, node: w.ids.nodeB, data: { state: 'pending', ports: made.ports, by: expect.stringMatching(/^pi/) } })]);
    const again = await call(t.app, 'POST', `/v1/slices/${name}/slivers`, w.pi, { node_id: w.ids.nodeB });
    expect([again.status, again.body.code, again.body.detail]).toEqual([409, 'already_exists', `slice ${name} already has a sliver on node node1.${w.otherSite}.test`]);
    await ok(t.app, 202, 'DELETE', `/v1/slices/${name}`, w.pi);
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.nodeB}/observed-state`, w.nodeB, { slivers: [{ id: made.id, state: 'deleted' }] });
  });
});

describe('sliver actions and teardown', () => {
  it('count every one of many actions sent at once, each with its event', async () => {
    const id = w.ids.sliver;
    const before = await doc(id);
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => call(t.app, 'POST', `/v1/slivers/${id}/actions`, i % 2 ? w.user : w.pi, { action: 'restart' })));
    expect(answers.map((a) => a.status)).toEqual(Array(12).fill(202));
    for (const a of answers) expect(a.body).toMatchObject({ id, slice: w.slice, node_id: w.ids.node, desired: 'running' });
    expect((await doc(id)).restart_seq).toBe(before.restart_seq + 12);
    const events = await eventsOf(id, 'sliver.action');
    expect(events).toHaveLength(12);
    expect(new Set(events.map((e: { data: { by: string } }) => e.data.by)).size).toBe(2);
  });

  it('answer who may not, and what is not there, before anything is written', async () => {
    const id = w.ids.sliver;
    const seq = (await doc(id)).restart_seq;
    const refused = await call(t.app, 'POST', `/v1/slivers/${id}/actions`, w.outsider, { action: 'restart' });
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toBe(`you may not act on slivers of slice ${w.slice}`);
    const del = await call(t.app, 'DELETE', `/v1/slivers/${id}`, w.otherPi);
    expect(del.status).toBe(403);
    expect(del.body.detail).toBe(`you may not delete slivers of slice ${w.slice}`);
    const missing = await call(t.app, 'POST', '/v1/slivers/00000000-0000-4000-8000-000000000000/actions', w.admin, { action: 'stop' });
    expect(missing.status).toBe(404);
    expect(await doc(id)).toMatchObject({ desired: 'running', restart_seq: seq });
  });

  it('never act on a sliver a racing delete marked, and a second delete writes nothing', async () => {
    for (let round = 0; round < 8; round++) {
      const made = await ok(t.app, 202, 'POST', `/v1/slices/${w.slice}/slivers`, w.pi, { node_id: w.ids.nodeB });
      const actions = Array.from({ length: 4 }, () => call(t.app, 'POST', `/v1/slivers/${made.id}/actions`, w.user, { action: 'stop' }));
      const [deleted, ...answers] = await Promise.all([call(t.app, 'DELETE', `/v1/slivers/${made.id}`, w.user), ...actions]);
      expect(deleted.status).toBe(202);
      expect(deleted.body).toMatchObject({ id: made.id, desired: 'deleted', state: 'deleting' });
      for (const a of answers) {
        if (a.status === 202) expect(a.body.desired, `round ${round}`).toBe('stopped');
        else expect([a.status, a.body.code], `round ${round}`).toEqual([409, 'sliver_deleting']);
      }
      // Whatever the order, the delete holds and each action that answered 202 left its event.
      const now = await ok(t.app, 200, 'GET', `/v1/slivers/${made.id}`, w.user);
      expect(now, `round ${round}`).toMatchObject({ desired: 'deleted', state: 'deleting' });
      expect((await eventsOf(made.id, 'sliver.action')).length, `round ${round}`).toBe(answers.filter((a) => a.status === 202).length);

      const again = await ok(t.app, 202, 'DELETE', `/v1/slivers/${made.id}`, w.pi);
      expect(again).toMatchObject({ id: made.id, desired: 'deleted', state: 'deleting', updated_at: now.updated_at });
      const states = (await eventsOf(made.id, 'sliver.state')).map((e: { data: { state: string; by?: string } }) => e.data);
      expect(states).toEqual([
        expect.objectContaining({ state: 'pending' }),
        { state: 'deleting', by: expect.stringMatching(/^user/) },
      ]);
      await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.nodeB}/observed-state`, w.nodeB, { slivers: [{ id: made.id, state: 'deleted' }] });
      expect((await call(t.app, 'GET', `/v1/slivers/${made.id}`, w.user)).status).toBe(404);
    }
  });
});
