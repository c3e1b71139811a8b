// Nodes' reports are written PLANETLITE_REPORT_WRITES at a time per replica; the others wait their
// turn in memory. A burst of reports (a fleet coming back) once took every pooled connection, and
// a user's request waited behind hundreds of reports for a connection (12 s at the 99th percentile
// with 5,000 simulated agents). Here the report statement is held until the test lets it go, so
// the turns are seen as they are taken: one report written at a time, and a user's request
// answered while the others wait.
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database, Queryable } from '@planetlite/db';
import { call, freshDatabase, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

/** A database whose report statements (the one that writes what a report changed) wait, once
 * hold() is called, until release(). */
function holdingReports(db: Database) {
  let held: Promise<void> | null = null;
  let open = () => {};
  const state = { writing: 0, most: 0, written: 0 };
  const wrap = (q: Queryable): Queryable['query'] => (async (sql: string, params?: unknown[], opts?: object) => {
    if (!/^\s*WITH o AS \(\s*SELECT \* FROM jsonb_to_recordset\(\$2::jsonb\)/.test(sql)) return q.query(sql, params, opts);
    state.writing++;
    state.written++;
    state.most = Math.max(state.most, state.writing);
    try {
      if (held) await held;
      return await q.query(sql, params, opts);
    } finally {
      state.writing--;
    }
  }) as Queryable['query'];
  const out: Database = {
    kind: db.kind,
    query: wrap(db),
    transaction: (fn) => db.transaction((tx) => fn({ query: wrap(tx) })),
    close: () => db.close(),
  };
  return {
    db: out,
    state,
    hold() {
      held = new Promise<void>((resolve) => (open = resolve));
      state.most = 0;
    },
    release() {
      open();
      held = null;
    },
  };
}

describe("nodes' reports take turns", () => {
  let hold: ReturnType<typeof holdingReports>;
  let t: TestApp;
  let w: World;

  beforeAll(async () => {
    hold = holdingReports(await freshDatabase());
    t = await testApp({ db: hold.db, config: { reportWrites: 1 } });
    w = await makeWorld(t.app);
  });
  afterAll(async () => {
    hold?.release();
    await t?.close();
    await hold?.db.close();
  });

  it('writes one report at a time, and answers a user while the others wait', async () => {
    hold.hold();
    try {
      // Partial reports (what changed) are always written: none is taken from memory.
      const report = (cpu: number) =>
        call(t.app, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, {
          partial: true,
          slivers: [{ id: w.ids.sliver, state: 'running', error: null, cpu_seconds: cpu, memory_bytes: 1 << 20, disk_bytes: 1 << 20, net_rx_bytes: cpu, net_tx_bytes: cpu }],
        });
      // One after another into the queue, so that their turns have an order to keep (three sent at
      // once reach it in any order).
      const reports = [report(1)];
      await until(() => hold.state.writing === 1, 'the first report writing');
      reports.push(report(2));
      await until(() => t.app.ctx.reportWrites.pendingCount === 1, 'the second report waiting');
      reports.push(report(3));
      await until(() => hold.state.writing === 1 && t.app.ctx.reportWrites.pendingCount === 2, 'one report writing, two waiting');
      const queues = String((await call(t.app, 'GET', '/metrics?name=planetlite_report_writes')).body);
      expect(queues).toMatch(/^planetlite_report_writes\{state="writing"\} 1$/m);
      expect(queues).toMatch(/^planetlite_report_writes\{state="waiting"\} 2$/m);
      // A user is answered while the reports wait: their turns do not hold the database.
      expect((await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.pi)).id).toBe(w.ids.sliver);
      expect(hold.state.writing).toBe(1);
      hold.release();
      for (const r of await Promise.all(reports)) expect(r.status).toBe(200);
      expect(hold.state.most).toBe(1);
      // Every report was written, in turn: the last one's figures stand.
      expect((await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.pi)).usage).toMatchObject({ cpu_seconds: 3 });
    } finally {
      hold.release();
    }
  });

  it("drops a report whose node hung up before its turn, and writes the ones after it", async () => {
    // A real connection, so that the node can hang up (inject has no socket to close).
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = t.app.server.address() as AddressInfo;
    const body = (cpu: number) => ({
      partial: true,
      slivers: [{ id: w.ids.sliver, state: 'running', error: null, cpu_seconds: cpu, memory_bytes: 1 << 20, disk_bytes: 1 << 20, net_rx_bytes: cpu, net_tx_bytes: cpu }],
    });
    const path = `/v1/nodes/${w.ids.node}/observed-state`;
    hold.hold();
    try {
      const first = call(t.app, 'PUT', path, w.node, body(10));
      await until(() => hold.state.writing === 1, 'the first report writing');
      const writtenBefore = hold.state.written;
      const req = request({ host: '127.0.0.1', port, path, method: 'PUT', headers: { authorization: `Bearer ${w.node}`, 'content-type': 'application/json' } });
      const hungUp = new Promise<void>((resolve) => req.on('error', () => resolve()).on('close', () => resolve()));
      req.end(JSON.stringify(body(20)));
      await until(() => t.app.ctx.reportWrites.pendingCount === 1, 'the second report waiting for its turn');
      req.destroy();
      await hungUp;
      const third = call(t.app, 'PUT', path, w.node, body(30));
      await until(() => t.app.ctx.reportWrites.pendingCount === 2, 'the third report waiting behind it');
      hold.release();
      expect((await first).status).toBe(200);
      expect((await third).status).toBe(200);
      // The first and the third were written; the second, whose node had gone, was not.
      expect(hold.state.written - writtenBefore).toBe(1);
      expect((await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.pi)).usage).toMatchObject({ cpu_seconds: 30 });
    } finally {
      hold.release();
    }
  });
});

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
