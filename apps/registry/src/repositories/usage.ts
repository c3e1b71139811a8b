// Accounting history: one usage sample per sliver per interval.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, numberOrNull, type Row } from './columns.js';

export function toUsageSample(r: Row): S.UsageSample {
  return {
    at: iso(r.at),
    cpu_seconds: numberOrNull(r.cpu_seconds),
    memory_bytes: numberOrNull(r.memory_bytes),
    disk_bytes: numberOrNull(r.disk_bytes),
    net_rx_bytes: numberOrNull(r.net_rx_bytes),
    net_tx_bytes: numberOrNull(r.net_tx_bytes),
  };
}

/** Samples in [since, until], oldest first, at most limit. */
export async function usageSamples(q: Queryable, sliver: string, since: Date, until: Date, limit: number): Promise<S.UsageSample[]> {
  const { rows } = await q.query(
    `SELECT at, cpu_seconds, memory_bytes, disk_bytes, net_rx_bytes, net_tx_bytes FROM sliver_usage
     WHERE sliver = $1 AND at >= $2 AND at <= $3 ORDER BY at LIMIT $4`,
    [sliver, since, until, limit],
  );
  return rows.map(toUsageSample);
}

/**
 * The INSERT of one usage sample per row `row` (an `id` and its `usage` as jsonb) of `from` that
 * `where` keeps, unless its sliver has a sample younger than `minAge` seconds (an SQL parameter).
 * The one form of the write, for a written report, a replica's flush and insertUsageSamples.
 */
export function insertSamplesSql(o: { from: string; row: string; where?: string; minAge: string }): string {
  const r = o.row;
  return `INSERT INTO sliver_usage (sliver, at, cpu_seconds, memory_bytes, disk_bytes, net_rx_bytes, net_tx_bytes)
       SELECT ${r}.id, now(), (${r}.usage ->> 'cpu_seconds')::float8, (${r}.usage ->> 'memory_bytes')::bigint, (${r}.usage ->> 'disk_bytes')::bigint,
              (${r}.usage ->> 'net_rx_bytes')::bigint, (${r}.usage ->> 'net_tx_bytes')::bigint
       FROM ${o.from}
       WHERE ${o.where ?? 'true'} AND NOT EXISTS (SELECT 1 FROM sliver_usage u WHERE u.sliver = ${r}.id AND u.at > now() - ${o.minAge}::float8 * interval '1 second')`;
}

/**
 * Records a sample for each sliver whose last one is at least minAgeSeconds old (answers how many
 * it recorded). Reports come
 * every 30 s and after every change, with jitter, so callers pass 90% of the interval: else a
 * 60 s cadence that arrives a little early would be kept only every other time.
 */
export async function insertUsageSamples(q: Queryable, samples: Array<{ id: string; usage: S.SliverUsage }>, minAgeSeconds: number): Promise<number> {
  if (!samples.length) return 0;
  const { rowCount } = await q.query(
    insertSamplesSql({ from: 'jsonb_to_recordset($1::jsonb) AS o(id uuid, usage jsonb)', row: 'o', minAge: '$2' }),
    [JSON.stringify(samples), minAgeSeconds],
  );
  return rowCount;
}

/** Deletes at most limit samples older than cutoff (one short statement; the sweep repeats it). */
export async function pruneUsageBefore(q: Queryable, cutoff: Date, limit: number): Promise<number> {
  const { rowCount } = await q.query('DELETE FROM sliver_usage WHERE ctid IN (SELECT ctid FROM sliver_usage WHERE at < $1 LIMIT $2)', [cutoff, limit]);
  return rowCount;
}
