// A replica takes an observed-state report that says nothing new (ReportMemo) without a statement
// of its own, queues its figures and the node's last_seen, and writes them for all nodes at once.
// Everything that could make the remembered report wrong must make the next one written: a change
// of the node's desired state (a sliver deleted before its agent saw it), a report written by
// another replica, the fan-out's reconnect. Two replicas here share one database and one fan-out.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryFanout, type Fanout } from '@planetlite/fanout';
import type { Database } from '@planetlite/db';
import type { ReportMemo } from '../src/services/report-memo.js';
import { writeQueuedUsage } from '../src/repositories/reports.js';
import { call, countingDatabase, freshDatabase, makeWorld, ok, onPglite, testApp, type TestApp, type World } from './helpers.js';

const usage = (cpu: number) => ({ cpu_seconds: cpu, memory_bytes: 64 << 20, disk_bytes: 1 << 20, net_rx_bytes: 10 * cpu, net_tx_bytes: 20 });
const caps = { lxc: true, kvm: false, kvm_accel: null };

describe('reports that say nothing new', () => {
  let db: Database & { statements: number };
  let fanout: Fanout;
  let a: TestApp;
  let b: TestApp;
  let w: World;
  const memo = (t: TestApp) => t.app.ctx.reports as ReportMemo;

  beforeAll(async () => {
    db = countingDatabase(await freshDatabase());
    fanout = memoryFanout();
    // Offline after 5 s: last_seen is rewritten once it is 1 s old.
    a = await testApp({ db, fanout, config: { nodeOfflineAfterSeconds: 5 } });
    b = await testApp({ db, fanout, config: { nodeOfflineAfterSeconds: 5 } });
    w = await makeWorld(a.app);
  });
  afterAll(async () => {
    await a.close();
    await b.close();
    await db.close();
  });

  /** The node's poll (its document is remembered by that replica from then on). */
  const poll = (t: TestApp) => call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
  async function report(t: TestApp, slivers: object[]): Promise<number> {
    // What either replica queued before (a poll's last_seen, say) is written now, not by its
    // once-a-second flush in the middle of this report's count.
    await memo(a).flush();
    await memo(b).flush();
    const before = db.statements;
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { capabilities: caps, slivers });
    return db.statements - before;
  }
  const sliver = (id: string) => ok(a.app, 200, 'GET', `/v1/slivers/${id}`, w.admin);
  const running = (cpu: number, id = w.ids.sliver) => ({ id, state: 'running', error: null, ...usage(cpu) });

  it('takes a repeated report without a statement; its figures wait for the next sample', async () => {
    await poll(a);
    // A report that is written writes its figures too.
    expect(await report(a, [running(1)])).toBeGreaterThan(0);
    expect((await sliver(w.ids.sliver)).usage.cpu_seconds).toBe(1);
    const absorbed = memo(a).stats.absorbed;
    expect(await report(a, [running(2)])).toBe(0);
    expect(memo(a).stats.absorbed).toBe(absorbed + 1);
    // The written report took a sample just now: the next figures are written with the next one
    // (the flush of a repeat once the interval is up: 'usage samples around a report that is written').
    await memo(a).flush();
    expect((await sliver(w.ids.sliver)).usage).toMatchObject({ cpu_seconds: 1, net_rx_bytes: 10 });
    // The node's poll: its document and its last_seen both wait in memory.
    const etag = (await poll(a)).headers.etag as string;
    const before = db.statements;
    expect((await call(a.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node, undefined, { 'if-none-match': etag })).status).toBe(304);
    expect(db.statements).toBe(before);
  });

  it('writes a report that says something new, with its event', async () => {
    expect(await report(a, [{ ...running(3), state: 'stopped' }])).toBeGreaterThan(0);
    expect((await sliver(w.ids.sliver)).state).toBe('stopped');
    expect(await report(a, [running(4)])).toBeGreaterThan(0);
    const events = await ok(a.app, 200, 'GET', `/v1/events?node=${w.ids.node}&type=sliver.state`, w.admin);
    expect(events.events.at(-1).data).toMatchObject({ state: 'running', from: 'stopped' });
    expect(await report(a, [running(5)])).toBe(0);
  });

  it('writes the report again once the desired state moved: a sliver deleted before its agent saw it is gone', async () => {
    // A second sliver on this node, of another slice of the same site.
    const other = `${w.site}_memo`;
    await ok(a.app, 201, 'POST', '/v1/slices', w.pi, { name: other, description: 'memo', url: 'https://example.org', image: 'memo-img' });
    const ghost = (await ok(a.app, 202, 'POST', `/v1/slices/${other}/slivers`, w.pi, { node_id: w.ids.node })).id;
    await poll(a);
    // The agent has not seen it yet: its report is the one before, and is written (the document moved).
    expect(await report(a, [running(6)])).toBeGreaterThan(0);
    expect(await report(a, [running(7)])).toBe(0);
    await ok(a.app, 202, 'DELETE', `/v1/slivers/${ghost}`, w.pi);
    await poll(a);
    expect(await report(a, [running(8)])).toBeGreaterThan(0);
    expect((await call(a.app, 'GET', `/v1/slivers/${ghost}`, w.admin)).status).toBe(404);
  });

  it('writes the report again after another replica wrote one of this node', async () => {
    await poll(a);
    await poll(b);
    expect(await report(a, [running(9)])).toBeGreaterThan(0);
    expect(await report(a, [running(10)])).toBe(0);
    // The agent moves to replica B and its sliver stops there, then comes back to A running again.
    expect(await report(b, [{ ...running(11), state: 'stopped' }])).toBeGreaterThan(0);
    expect((await sliver(w.ids.sliver)).state).toBe('stopped');
    expect(await report(a, [running(12)])).toBeGreaterThan(0);
    expect((await sliver(w.ids.sliver)).state).toBe('running');
  });

  it('writes every report while the fan-out cannot be trusted', async () => {
    await poll(a);
    await report(a, [running(13)]);
    expect(await report(a, [running(14)])).toBe(0);
    // A reconnect of the fan-out: messages sent meanwhile may be lost.
    (fanout as { epoch: number }).epoch++;
    expect(await report(a, [running(15)])).toBeGreaterThan(0);
  });

  it('keeps last_seen fresh through the flush, and brings back a node marked offline with node.online', async () => {
    await poll(a);
    await report(a, [running(16)]);
    // The sweep found it silent (as if its calls had stopped for a while).
    await db.query(`UPDATE nodes SET state = 'offline', last_seen = now() - interval '1 minute' WHERE id = $1`, [w.ids.node]);
    await new Promise((r) => setTimeout(r, 1100));
    expect(await report(a, [running(17)])).toBe(0);
    await memo(a).flush();
    const { rows } = await db.query<{ state: string; age: number }>(`SELECT state, extract(epoch FROM now() - last_seen)::float8 AS age FROM nodes WHERE id = $1`, [w.ids.node]);
    expect(rows[0]).toMatchObject({ state: 'online' });
    expect(rows[0]!.age).toBeLessThan(5);
    const events = await ok(a.app, 200, 'GET', `/v1/events?node=${w.ids.node}&type=node.online`, w.admin);
    expect(Date.parse(events.events.at(-1).at)).toBeGreaterThan(Date.now() - 5000);
  });

  it('keeps one usage sample per interval from reports it took from memory, and writes no figures between two', async () => {
    const { rows: [before] } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM sliver_usage WHERE sliver = $1', [w.ids.sliver]);
    const shown = (await sliver(w.ids.sliver)).usage;
    const flushed = memo(a).stats.samples;
    for (let cpu = 20; cpu < 25; cpu++) expect(await report(a, [running(cpu)])).toBe(0);
    await memo(a).flush();
    const { rows: [after] } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM sliver_usage WHERE sliver = $1', [w.ids.sliver]);
    // Samples were taken within the interval already: none more, and the row keeps the last sample's figures.
    expect(after!.n).toBe(before!.n);
    expect((await sliver(w.ids.sliver)).usage).toEqual(shown);
    expect(memo(a).stats.samples).toBe(flushed);
  });

  it('is off with the document cache, and every report is written', async () => {
    const off = await testApp({ db, fanout, config: { docCacheSeconds: 0 } });
    try {
      expect(off.app.ctx.reports).toBeNull();
      await poll(off);
      const before = db.statements;
      await ok(off.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { capabilities: caps, slivers: [running(30)] });
      await ok(off.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { capabilities: caps, slivers: [running(31)] });
      expect(db.statements - before).toBeGreaterThanOrEqual(2);
      expect((await sliver(w.ids.sliver)).usage.cpu_seconds).toBe(31);
    } finally {
      await off.close();
    }
  });

  it('takes a partial report (what changed): it touches only the slivers it lists, and the next whole report is written', async () => {
    const other = `${w.site}_part`;
    await ok(a.app, 201, 'POST', '/v1/slices', w.pi, { name: other, description: 'partial', url: 'https://example.org', image: 'memo-img' });
    const b2 = (await ok(a.app, 202, 'POST', `/v1/slices/${other}/slivers`, w.pi, { node_id: w.ids.node })).id;
    await poll(a);
    expect(await report(a, [running(40), running(40, b2)])).toBeGreaterThan(0);
    expect(await report(a, [running(41), running(41, b2)])).toBe(0);
    const partial = async (slivers: object[]) => {
      const before = db.statements;
      await ok(a.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { capabilities: caps, slivers, partial: true });
      return db.statements - before;
    };
    // Only b2 changed: the other sliver keeps its row as it was.
    expect(await partial([{ ...running(42, b2), state: 'stopped' }])).toBeGreaterThan(0);
    expect((await sliver(b2)).state).toBe('stopped');
    expect((await sliver(w.ids.sliver)).state).toBe('running');
    // The absorbed report's figures wait for a sample: the row shows the written report's.
    await memo(a).flush();
    expect((await sliver(w.ids.sliver)).usage.cpu_seconds).toBe(40);
    // What the replica remembered of the whole report is gone: the next one is written.
    expect(await report(a, [running(43), { ...running(43, b2), state: 'stopped' }])).toBeGreaterThan(0);
    // A deleting sliver left out of a partial report is not gone; one reported deleted is.
    await ok(a.app, 202, 'DELETE', `/v1/slivers/${b2}`, w.pi);
    await poll(a);
    await partial([running(44)]);
    expect((await sliver(b2)).state).toBe('deleting');
    await partial([{ id: b2, state: 'deleted' }]);
    expect((await call(a.app, 'GET', `/v1/slivers/${b2}`, w.admin)).status).toBe(404);
    expect((await sliver(w.ids.sliver)).state).toBe('running');
  });
});

describe('usage samples around a report that is written', () => {
  // One sample per 10 s (the shortest interval the config takes), so the test waits it out.
  let t: TestApp;
  let w: World;
  beforeAll(async () => {
    t = await testApp({ config: { usageSampleSeconds: 10 } });
    w = await makeWorld(t.app);
  });
  afterAll(() => t.close());

  const samples = async () => (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM sliver_usage WHERE sliver = $1', [w.ids.sliver])).rows[0]!.n;
  const report = (cpu: number, error: string | null) =>
    ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { capabilities: caps, slivers: [{ id: w.ids.sliver, state: 'running', error, ...usage(cpu) }] });

  it('keeps the next sample due when a report written between two samples recorded none', async () => {
    await call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    await report(1, null); // written: the node's first report, with its first sample
    const first = Date.now();
    expect(await samples()).toBe(1);
    await new Promise((r) => setTimeout(r, 4000));
    // Written (it says something new), 4 s after the sample: too soon for another.
    const absorbed = (t.app.ctx.reports as ReportMemo).stats.absorbed;
    await report(2, 'a warning');
    expect((t.app.ctx.reports as ReportMemo).stats.absorbed).toBe(absorbed);
    expect(await samples()).toBe(1);
    // A repeat once the interval since the first sample is up: taken from memory, and its figures
    // are the sample due (not one a whole interval after the written report).
    await new Promise((r) => setTimeout(r, Math.max(0, first + 9500 - Date.now())));
    await report(3, 'a warning');
    expect((t.app.ctx.reports as ReportMemo).stats.absorbed).toBe(absorbed + 1);
    await (t.app.ctx.reports as ReportMemo).flush();
    expect(await samples()).toBe(2);
    const row = await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.admin);
    expect(row.usage.cpu_seconds).toBe(3);
  }, 30_000);
});

describe('the flush of queued figures (writeQueuedUsage)', () => {
  let t: TestApp;
  let w: World;
  beforeAll(async () => {
    t = await testApp();
    w = await makeWorld(t.app);
  });
  afterAll(() => t.close());

  const samples = async (id: string) => (await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM sliver_usage WHERE sliver = $1', [id])).rows[0]!.n;
  /** The sliver's row as stored, and the sliver as the API shows it. */
  const kept = async (id: string) => (await t.db.query<{ usage: { cpu_seconds: number } | null }>('SELECT usage FROM slivers WHERE id = $1', [id])).rows[0]!.usage;
  const shown = async (id: string) => (await ok(t.app, 200, 'GET', `/v1/slivers/${id}`, w.admin)).usage;
  const row = (cpu: number, node = w.ids.node) => ({ node, id: w.ids.sliver, usage: usage(cpu) });

  it('writes a usage sample, at most one per interval, and leaves the sliver\'s row alone; the sliver shows the newer figures', async () => {
    await t.db.query('DELETE FROM sliver_usage WHERE sliver = $1', [w.ids.sliver]);
    const before = await kept(w.ids.sliver);
    expect(await writeQueuedUsage(t.db, [row(1)], 54)).toEqual({ sampled: 1 });
    expect(await samples(w.ids.sliver)).toBe(1);
    expect(await kept(w.ids.sliver)).toEqual(before);
    const sampled = await shown(w.ids.sliver);
    expect(sampled).toEqual({ ...usage(1), at: expect.any(String) });
    expect(Date.parse(sampled.at)).toBeGreaterThan(Date.now() - 10_000);
    // Due again, but a sample is younger than the interval: nothing written.
    expect(await writeQueuedUsage(t.db, [row(2)], 54)).toEqual({ sampled: 0 });
    expect(await samples(w.ids.sliver)).toBe(1);
    expect(await shown(w.ids.sliver)).toEqual(sampled);
    // A report written after the sample: its figures, kept on the row, are the newer.
    await call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { capabilities: caps, slivers: [{ id: w.ids.sliver, state: 'running', error: null, ...usage(5) }] });
    expect(await shown(w.ids.sliver)).toMatchObject(usage(5));
    // And a sample after that is newer again.
    expect(await writeQueuedUsage(t.db, [row(7)], 0)).toEqual({ sampled: 1 });
    expect(await shown(w.ids.sliver)).toMatchObject(usage(7));
  });

  it('drops a sliver that is not on the reporting node, and writes nothing of it', async () => {
    const n = await samples(w.ids.sliver);
    expect(await writeQueuedUsage(t.db, [row(9, w.ids.nodeB)], 0)).toEqual({ sampled: 0 });
    expect(await samples(w.ids.sliver)).toBe(n);
  });

  // PGlite has one connection: no second writer can hold the row while the flush runs.
  it.skipIf(onPglite)('waits neither on a report nor on a delete that holds the row', async () => {
    async function whileHeld(lock: string, run: () => Promise<void>): Promise<void> {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      const holder = t.db.transaction(async (tx) => {
        await tx.query(`SELECT 1 FROM slivers WHERE id = $1 ${lock}`, [w.ids.sliver]);
        locked();
        await held;
      });
      try {
        await isLocked;
        await run();
      } finally {
        release();
        await holder;
      }
    }
    const n = await samples(w.ids.sliver);
    // A node's report locks its slivers' rows FOR NO KEY UPDATE, a delete FOR UPDATE: the sample is
    // written beside either (a sample has no foreign key to lock its sliver: migration 014).
    await whileHeld('FOR NO KEY UPDATE', async () => {
      expect(await writeQueuedUsage(t.db, [row(10)], 0)).toEqual({ sampled: 1 });
    });
    await whileHeld('FOR UPDATE', async () => {
      expect(await writeQueuedUsage(t.db, [row(11)], 0)).toEqual({ sampled: 1 });
    });
    expect(await samples(w.ids.sliver)).toBe(n + 2);
  });
});
