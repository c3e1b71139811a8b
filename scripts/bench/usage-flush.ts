// The registry's usage flush on its own, at fleet size: every sliver's figures of N nodes × K
// slivers written the way replicas write what they absorbed (writeQueuedUsage, FLUSH_BATCH rows per
// statement, one flush per replica at once), against a real PostgreSQL, beside the floor measured
// in the same run: a bare UPDATE of the same rows' usage and a bare INSERT of the same samples.
// What the fleet benchmark's profile showed as three quarters of PostgreSQL's time at 10,000 agents.
//
//   node scripts/bench/usage-flush.ts [--nodes 10000] [--slivers 20] [--rounds 3] [--replicas 2] [--write docs/benchmarks.md]
//
// Runs with Node 24's built-in TypeScript support after `bash scripts/setup.sh` (needs the build).
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { openDatabase, migrate, type Database, type Queryable } from '@planetlite/db';
import { writeQueuedUsage, type QueuedUsage } from '../../apps/registry/dist/repositories/reports.js';
import { FLUSH_BATCH } from '../../apps/registry/dist/services/report-memo.js';
import { startPostgres, type PostgresServer } from '../../test/harness/services.ts';
import { appendResults } from './results.ts';
import { percentile } from './fleet-agents.ts';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '10000' },
    slivers: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
    replicas: { type: 'string', default: '2' },
    write: { type: 'string' },
  },
});
const N = Number(args.nodes);
const K = Number(args.slivers);
const ROUNDS = Number(args.rounds);
const REPLICAS = Number(args.replicas);
const SITE = 'flush';
// A run's rounds follow each other within seconds, where a fleet's come a sample interval apart
// (PLANETLITE_USAGE_SAMPLE_SECONDS, 60 by default): an interval of 0 makes a sample due in each.
const SAMPLE_SECONDS = 0;

interface Pass { name: string; rows: number; ms: number; batchP50: number; batchP99: number; hot: number; updated: number; walMb: number }

const log = (s: string) => console.error(`[usage-flush] ${s}`);

async function seed(db: pg.Client): Promise<void> {
  await db.query(`INSERT INTO sites (login_base, name, max_slices, max_slivers) VALUES ($1, 'Flush', 100000, 10000000)`, [SITE]);
  await db.query(
    `INSERT INTO slices (name, site, kind, image, resources, expires_at)
     SELECT $1 || '_s' || k, $1, 'lxc', 'debian12', '{}', now() + interval '1 day' FROM generate_series(0, $2 - 1) k`,
    [SITE, K],
  );
  await db.query(
    `INSERT INTO nodes (id, site, hostname, address, key_hash, state, capabilities, resources, port_first, port_last)
     SELECT gen_random_uuid(), $1, 'node' || i || '.flush.test', '10.0.0.1', 'k' || i, 'online', '{}', '{}', 20000, 20000 + $2 * 10 - 1
     FROM generate_series(0, $3 - 1) i`,
    [SITE, K, N],
  );
  // Slice by slice, as slivers come: a slice is given slivers on many nodes at once, so a node's
  // slivers lie on as many pages as it has slices.
  await db.query(
    `INSERT INTO slivers (id, slice, site, node_id, kind, state, port_first, port_last)
     SELECT gen_random_uuid(), $1 || '_s' || k, $1, n.id, 'lxc', 'running', 20000 + k * 10, 20000 + k * 10 + 9
     FROM generate_series(0, $2 - 1) k CROSS JOIN nodes n ORDER BY k, n.id`,
    [SITE, K],
  );
  await db.query('VACUUM ANALYZE');
}

/** Every sliver's figures for round r: all of them moved since the last round, and a sample is due
 * (a replica queues a node's figures only then, about once a sample interval). */
function figures(slivers: { node: string; id: string }[], r: number): QueuedUsage[] {
  return slivers.map((s, i) => ({
    node: s.node, id: s.id,
    usage: { cpu_seconds: r * 30 + (i % 7), memory_bytes: 50_000_000 + r * 4096, disk_bytes: 16_384, net_rx_bytes: r * 1000 + i, net_tx_bytes: r * 900 + i },
  }));
}

/**
 * Splits rows into batches and runs them on `replicas` connections at once, as replicas flush. The
 * connections are opened for the pass and closed after it: a backend's table counters reach the
 * statistics views when it exits.
 */
async function pass(watch: pg.Client, url: string, name: string, rows: QueuedUsage[], write: (q: Queryable, batch: QueuedUsage[]) => Promise<unknown>): Promise<Pass> {
  const db = await openDatabase({ url, poolSize: REPLICAS });
  const before = await tableStats(watch);
  const batches: QueuedUsage[][] = [];
  for (let i = 0; i < rows.length; i += FLUSH_BATCH) batches.push(rows.slice(i, i + FLUSH_BATCH));
  const times: number[] = [];
  let next = 0;
  const t = performance.now();
  await Promise.all(Array.from({ length: REPLICAS }, async () => {
    while (next < batches.length) {
      const b = batches[next++]!;
      const s = performance.now();
      await write(db, b);
      times.push(performance.now() - s);
    }
  }));
  const ms = performance.now() - t;
  await db.close();
  await new Promise((r) => setTimeout(r, 200));
  const after = await tableStats(watch);
  const p = { name, rows: rows.length, ms, batchP50: percentile(times.sort((a, b) => a - b), 50), batchP99: percentile(times, 99), hot: after.hot - before.hot, updated: after.upd - before.upd, walMb: (after.wal - before.wal) / 2 ** 20 };
  log(`${name}: ${rows.length} rows in ${(ms / 1000).toFixed(1)} s (${Math.round(rows.length / (ms / 1000))}/s), batch p50 ${p.batchP50.toFixed(1)} / p99 ${p.batchP99.toFixed(1)} ms, ${p.updated} updated (${p.hot} HOT), WAL ${p.walMb.toFixed(0)} MB`);
  return p;
}

async function tableStats(db: pg.Client): Promise<{ upd: number; hot: number; wal: number }> {
  await db.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await db.query(
    `SELECT n_tup_upd::float8 AS upd, n_tup_hot_upd::float8 AS hot, (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8 AS wal
     FROM pg_stat_user_tables WHERE relname = 'slivers'`,
  );
  return rows[0] as { upd: number; hot: number; wal: number };
}

async function main(): Promise<void> {
  let server: PostgresServer | undefined;
  let db: Database | undefined;
  try {
    // Durable, as a production server runs: the WAL each pass writes is part of its cost.
    server = await startPostgres({ durable: true });
    const url = await server.createDatabase('flush');
    db = await openDatabase({ url, poolSize: REPLICAS + 1 });
    await migrate(db);
    await db.close();
    db = undefined;
    const raw = new pg.Client({ connectionString: url });
    await raw.connect();
    let t = performance.now();
    await seed(raw);
    log(`${N} nodes × ${K} slivers seeded in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    // Queued as reports come: a node's slivers together, the nodes in no order.
    const { rows: slivers } = await raw.query<{ node: string; id: string }>('SELECT node_id AS node, id FROM slivers ORDER BY md5(node_id::text), id');
    await raw.end();
    const w = new pg.Client({ connectionString: url });
    await w.connect();
    const passes: Pass[] = [];
    try {
      for (let r = 1; r <= ROUNDS; r++) {
        const rows = figures(slivers, r);
        passes.push(await pass(w, url, `flush, round ${r}`, rows, (q, b) => writeQueuedUsage(q, b, SAMPLE_SECONDS)));
      }
      // The floor: the same rows' figures in a bare UPDATE, and the same samples in a bare INSERT.
      passes.push(await pass(w, url, 'floor: bare UPDATE of usage', figures(slivers, ROUNDS + 1), (q, b) => q.query(
        `UPDATE slivers s SET usage = o.usage FROM jsonb_to_recordset($1::jsonb) AS o(id uuid, usage jsonb) WHERE s.id = o.id`, [JSON.stringify(b)])));
      passes.push(await pass(w, url, 'floor: bare INSERT of samples', figures(slivers, ROUNDS + 2), (q, b) => q.query(
        `INSERT INTO sliver_usage (sliver, at, cpu_seconds, memory_bytes, disk_bytes, net_rx_bytes, net_tx_bytes)
         SELECT o.id, now(), (o.usage ->> 'cpu_seconds')::float8, (o.usage ->> 'memory_bytes')::bigint, (o.usage ->> 'disk_bytes')::bigint,
                (o.usage ->> 'net_rx_bytes')::bigint, (o.usage ->> 'net_tx_bytes')::bigint
         FROM jsonb_to_recordset($1::jsonb) AS o(id uuid, usage jsonb)`, [JSON.stringify(b)])));
    } finally {
      await w.end();
    }
    const table = [
      '| pass | rows | s | rows/s | batch p50 ms | batch p99 ms | rows updated (HOT) | WAL MB |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
      ...passes.map((p) => `| ${p.name} | ${p.rows} | ${(p.ms / 1000).toFixed(1)} | ${Math.round(p.rows / (p.ms / 1000))} | ${p.batchP50.toFixed(1)} | ${p.batchP99.toFixed(1)} | ${p.updated} (${p.hot}) | ${p.walMb.toFixed(0)} |`),
    ].join('\n');
    const text = [
      `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; ${new Date().toISOString()}.`,
      `\`node scripts/bench/usage-flush.ts --nodes ${N} --slivers ${K} --rounds ${ROUNDS} --replicas ${REPLICAS}\`: ${N * K} slivers, ${FLUSH_BATCH} per statement, ${REPLICAS} at once, durable PostgreSQL.`,
      '',
      table,
    ].join('\n');
    console.log(text);
    if (args.write) appendResults(args.write, text, '## Usage flush at fleet size (`node scripts/bench/usage-flush.ts`)');
  } finally {
    await db?.close().catch(() => undefined);
    await server?.stop();
  }
}

await main();
