// The node side at fleet scale: what one observed-state report and one poll cost the database
// (statements counted through the Database the app is given), that a report which changes nothing
// rewrites no row, and that the offline sweep neither waits on nor blocks a node's own calls.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '@planetlite/db';
import { call, countingDatabase, freshDatabase, makeWorld, ok, onPglite, testApp, type TestApp, type World } from './helpers.js';
import { sweepOfflineNodes } from '../src/services/sweeps.js';

let db: Database & { statements: number };
let t: TestApp;
let w: World;

beforeAll(async () => {
  db = countingDatabase(await freshDatabase());
  t = await testApp({ db });
  w = await makeWorld(t.app);
});
afterAll(async () => {
  await t.close();
  await db.close();
});

const usage = (cpu: number) => ({ cpu_seconds: cpu, memory_bytes: 64 << 20, disk_bytes: 1 << 20, net_rx_bytes: 10, net_tx_bytes: 20 });
const caps = { lxc: true, kvm: false, kvm_accel: null };

async function report(body: object): Promise<{ statements: number; answer: any }> {
  const before = db.statements;
  const answer = await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, body);
  return { statements: db.statements - before, answer };
}

/** The row version of a node or sliver (xmin changes with every write of the row). */
async function version(table: 'nodes' | 'slivers', id: string): Promise<string> {
  const { rows } = await t.db.query<{ v: string }>(`SELECT xmin::text AS v FROM ${table} WHERE id = $1`, [id]);
  return rows[0]!.v;
}

describe('an observed-state report', () => {
  it('is one statement (the key is remembered), and one that changes nothing rewrites no row', async () => {
    const body = { capabilities: caps, slivers: [{ id: w.ids.sliver, state: 'running', error: null, ...usage(1) }] };
    // The node's first call brings it online (node.online): that report takes the full transaction.
    const first = await report(body);
    expect(first.answer).toMatchObject({ ok: true, updated: 1 });
    const events = await ok(t.app, 200, 'GET', `/v1/events?node=${w.ids.node}&type=sliver.state`, w.admin);
    expect(events.events.at(-1).data).toMatchObject({ state: 'running', from: 'pending' });

    const node = await version('nodes', w.ids.node);
    const sliver = await version('slivers', w.ids.sliver);
    const again = await report(body);
    expect(again.answer).toMatchObject({ ok: true, updated: 0, removed: 0 });
    // The report itself: the node's key was looked up by its first call and is remembered.
    expect(again.statements).toBe(1);
    // last_seen is fresh and nothing moved: neither row was written.
    expect(await version('nodes', w.ids.node)).toBe(node);
    expect(await version('slivers', w.ids.sliver)).toBe(sliver);

    // New figures are written (still one statement); the state stays what the registry had.
    const moved = await report({ ...body, slivers: [{ ...body.slivers[0], ...usage(2) }] });
    expect(moved.statements).toBe(1);
    const s = await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.user);
    expect(s).toMatchObject({ state: 'running', usage: { cpu_seconds: 2 } });
    expect(await version('nodes', w.ids.node)).toBe(node);
  });

  it('that changes a state, the capabilities or the front door is applied and recorded', async () => {
    const stopped = await report({ slivers: [{ id: w.ids.sliver, state: 'stopped', error: 'exited 1', ...usage(3) }] });
    expect(stopped.answer).toMatchObject({ updated: 1 });
    expect(stopped.statements).toBe(1);
    const states = await ok(t.app, 200, 'GET', `/v1/events?node=${w.ids.node}&type=sliver.state`, w.admin);
    expect(states.events.at(-1)).toMatchObject({ sliver: w.ids.sliver, data: { state: 'stopped', error: 'exited 1', from: 'running' } });
    expect(await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.user)).toMatchObject({ state: 'stopped', error: 'exited 1' });
    await report({ capabilities: { lxc: true, kvm: true, kvm_accel: 'tcg' }, slivers: [{ id: w.ids.sliver, state: 'stopped', error: 'exited 1' }] });
    const ev = await ok(t.app, 200, 'GET', `/v1/events?node=${w.ids.node}&type=node.capabilities`, w.admin);
    expect(ev.events.at(-1).data.to).toEqual({ lxc: true, kvm: true, kvm_accel: 'tcg' });
    // The same capabilities again are no news.
    const same = await report({ capabilities: { lxc: true, kvm: true, kvm_accel: 'tcg' }, slivers: [{ id: w.ids.sliver, state: 'stopped', error: 'exited 1' }] });
    expect(same.statements).toBe(1);
  });

  it('of an offline node brings it back online with node.online', async () => {
    await t.db.query("UPDATE nodes SET state = 'offline' WHERE id = $1", [w.ids.node]);
    await report({ slivers: [{ id: w.ids.sliver, state: 'stopped', error: 'exited 1' }] });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.admin)).state).toBe('online');
    const ev = await ok(t.app, 200, 'GET', `/v1/events?node=${w.ids.node}&type=node.online`, w.admin);
    expect(ev.events.length).toBeGreaterThan(0);
  });

  it('leaves a sliver being deleted meanwhile as deleting', async () => {
    await ok(t.app, 202, 'DELETE', `/v1/slivers/${w.ids.sliver}`, w.pi);
    // The node has not seen the delete yet and reports it stopped as before.
    await report({ slivers: [{ id: w.ids.sliver, state: 'stopped', error: 'exited 1' }] });
    expect((await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.user)).state).toBe('deleting');
    // Gone from the report: gone.
    expect((await report({ slivers: [] })).answer).toMatchObject({ removed: 1 });
    expect((await call(t.app, 'GET', `/v1/slivers/${w.ids.sliver}`, w.user)).status).toBe(404);
  });
});

describe('a desired-state poll', () => {
  it('answers an unchanged document from memory, and a node seen lately writes nothing', async () => {
    const first = await call(t.app, 'GET', `/v1/nodes/${w.ids.nodeB}/desired-state`, w.nodeB);
    expect(first.status).toBe(200);
    const node = await version('nodes', w.ids.nodeB);
    const before = db.statements;
    const again = await call(t.app, 'GET', `/v1/nodes/${w.ids.nodeB}/desired-state`, w.nodeB, undefined, { 'if-none-match': first.headers.etag as string });
    expect(again.status).toBe(304);
    // last_seen's check only: the key and the document are remembered from the first call.
    expect(db.statements - before).toBe(1);
    expect(await version('nodes', w.ids.nodeB)).toBe(node);
  });
});

// Two connections at once (one holding a row, the sweep): PostgreSQL only, so the PostgreSQL
// project runs it and the PGlite project (one connection) does not define it.
if (!onPglite) describe('the offline sweep (PostgreSQL: PGlite has one connection)', () => {
  it('skips a node whose row a call holds, and marks the other silent nodes offline', async () => {
    const silent = [w.ids.node, w.ids.nodeB];
    await t.db.query("UPDATE nodes SET state = 'online', last_seen = now() - interval '1 day' WHERE id = ANY($1)", [silent]);
    // A report of node B holds its row: the sweep must not wait for it.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const holder = t.db.transaction(async (q) => {
      await q.query('SELECT 1 FROM nodes WHERE id = $1 FOR NO KEY UPDATE', [w.ids.nodeB]);
      locked();
      await held;
    });
    await isLocked;
    try {
      const swept = await sweepOfflineNodes({ ...t.app.ctx, config: { ...t.app.ctx.config } });
      expect(swept).toContain(w.ids.node);
      expect(swept).not.toContain(w.ids.nodeB);
    } finally {
      release();
      await holder;
    }
    // Its next run takes it.
    expect(await sweepOfflineNodes(t.app.ctx)).toEqual([w.ids.nodeB]);
  });
});
