// A node's report in one statement: its slivers' rows and events, the usage samples that are due, and
// the node's last_seen once it has aged — everything but what needs the report's full transaction.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { json, type Row } from './columns.js';
import { toEvent } from './events.js';
import { insertSamplesSql } from './usage.js';

/** One reported sliver as the statement takes it (error already cut, duplicates folded). */
export interface ReportedSliver {
  id: string;
  state: S.SliverState | 'deleted';
  error: string | null;
  /** null with keep_address: the report said nothing of the address. */
  address: string | null;
  keep_address: boolean;
  usage: S.SliverUsage | null;
  watchdog_hold: S.WatchdogHold | null;
}

export interface PlainReport {
  slivers: ReportedSliver[];
  /** What the report says the node can do, as stored; null: not reported. */
  capabilities: S.NodeCapabilities | null;
  /** The front door as stored (null: none); undefined: not reported. */
  frontDoor: S.FrontDoor | null | undefined;
  images: S.NodeImage[] | null;
  /** The node's spares (its warm pool) as the report lists them; [] when it lists none. */
  spares: S.NodeSpare[];
  /** last_seen is rewritten only when older than this. */
  seenRefreshSeconds: number;
  /** At most one usage sample per sliver this often (minus a margin the caller gives). */
  sampleSeconds: number;
  /** The report lists only the slivers that changed: the others are left as they are, and a
   * deleting sliver left out is not gone. */
  partial: boolean;
}

/**
 * Applies a report in one statement when nothing in it needs more than its slivers' rows and events:
 * the node is online with the same capabilities and front door, and no deleting sliver is gone.
 * Writes only what moved: a sliver row whose state, error, address, hold or figures changed (or
 * whose figures are older than the sample interval), a sliver.state event per state or error
 * change, the due usage samples, the node's images and spares when they differ, and last_seen
 * once it has aged. Answers null, having written
 * nothing, when the report needs the full treatment (node.online, capabilities, front door, a
 * sliver gone): the caller then applies it in a transaction. A partial report reads and locks
 * only the slivers it lists.
 *
 * The node's slivers are locked while it runs, so a sliver deleted meanwhile stays 'deleting'.
 */
export async function applyPlainReport(q: Queryable, nodeId: string, r: PlainReport): Promise<{ events: S.Event[]; sampled: number } | null> {
  const { rows } = await q.query<{ plain: boolean; events: Row[]; sampled: number }>(
    `WITH o AS (
       SELECT * FROM jsonb_to_recordset($2::jsonb)
         AS o(id uuid, state text, error text, address text, keep_address boolean, usage jsonb, watchdog_hold jsonb)
     ), n AS (
       SELECT state, capabilities, front_door FROM nodes WHERE id = $1
     ), mine AS MATERIALIZED (
       SELECT s.id, s.slice, s.state, s.desired, s.error, o.id AS oid, o.state AS ostate
       FROM slivers s LEFT JOIN o ON o.id = s.id
       WHERE s.node_id = $1 AND (NOT $10::boolean OR o.id IS NOT NULL) ORDER BY s.id FOR NO KEY UPDATE OF s
     ), verdict AS (
       SELECT EXISTS (SELECT 1 FROM n WHERE n.state = 'online')
         AND ($3::jsonb IS NULL OR (SELECT bool_and((n.capabilities -> f) IS NOT DISTINCT FROM ($3::jsonb -> f))
                                    FROM n, unnest(ARRAY['lxc', 'kvm', 'kvm_accel', 'arch']) f))
         AND (NOT $4::boolean OR (SELECT front_door FROM n) IS NOT DISTINCT FROM $5::jsonb)
         AND NOT EXISTS (SELECT 1 FROM mine WHERE desired = 'deleted' AND (oid IS NULL OR ostate = 'deleted')) AS plain
     ), next AS (
       -- A sliver being deleted stays 'deleting' until it is gone, unless its teardown failed.
       SELECT m.id, m.slice, m.state AS was, m.error AS had, o.error,
              CASE WHEN m.desired = 'deleted' AND o.state <> 'failed' THEN 'deleting' ELSE o.state END AS state
       FROM mine m JOIN o ON o.id = m.id WHERE o.state <> 'deleted'
     ), slivers_written AS (
       UPDATE slivers s SET
         state = x.state,
         error = x.error,
         address = CASE WHEN o.keep_address THEN s.address ELSE o.address END,
         usage = COALESCE(o.usage || jsonb_build_object('at', now()), s.usage),
         watchdog_hold = o.watchdog_hold,
         updated_at = CASE WHEN x.state IS DISTINCT FROM x.was OR x.error IS DISTINCT FROM x.had OR s.watchdog_hold IS DISTINCT FROM o.watchdog_hold
                           THEN now() ELSE s.updated_at END
       FROM o JOIN next x ON x.id = o.id, verdict
       WHERE verdict.plain AND s.id = o.id AND (
         x.state IS DISTINCT FROM x.was OR x.error IS DISTINCT FROM x.had
         OR (NOT o.keep_address AND s.address IS DISTINCT FROM o.address)
         OR s.watchdog_hold IS DISTINCT FROM o.watchdog_hold
         OR (o.usage IS NOT NULL AND (s.usage IS NULL OR (s.usage - 'at') IS DISTINCT FROM o.usage
             OR (s.usage ->> 'at')::timestamptz < now() - $8::float8 * interval '1 second')))
       RETURNING s.id
     ), events_written AS (
       INSERT INTO events (type, slice, node, sliver, data)
       SELECT 'sliver.state', x.slice, $1, x.id, jsonb_build_object('state', x.state, 'error', x.error, 'from', x.was)
       FROM next x, verdict
       WHERE verdict.plain AND (x.state IS DISTINCT FROM x.was OR x.error IS DISTINCT FROM x.had)
       ORDER BY x.id
       RETURNING *
     ), node_written AS (
       UPDATE nodes SET last_seen = now(), images = COALESCE($6::jsonb, images), spares = $9::jsonb
       FROM verdict
       WHERE verdict.plain AND id = $1 AND (last_seen IS NULL OR last_seen < now() - $7::float8 * interval '1 second'
         OR ($6::jsonb IS NOT NULL AND images IS DISTINCT FROM $6::jsonb) OR spares IS DISTINCT FROM $9::jsonb)
       RETURNING id
     ), sampled AS (
       ${insertSamplesSql({ from: 'o, verdict', row: 'o', minAge: '$8',
         where: "verdict.plain AND o.usage IS NOT NULL AND o.state <> 'deleted' AND o.id IN (SELECT id FROM mine)" })}
       RETURNING sliver
     )
     SELECT plain, (SELECT coalesce(jsonb_agg(e ORDER BY e.id), '[]'::jsonb) FROM events_written e) AS events,
            (SELECT count(*)::int FROM sampled) AS sampled FROM verdict`,
    [
      nodeId,
      JSON.stringify(r.slivers),
      r.capabilities && JSON.stringify(r.capabilities),
      r.frontDoor !== undefined,
      r.frontDoor ? JSON.stringify(r.frontDoor) : null,
      r.images && JSON.stringify(r.images),
      r.seenRefreshSeconds,
      r.sampleSeconds,
      JSON.stringify(r.spares),
      r.partial,
    ],
    // Its generic plan cost PostgreSQL about 40 % more time at 2,000 agents than planning it for each
    // report's values (docs/benchmarks.md, 2026-12-04 16:36).
    { planEachCall: true },
  );
  const row = rows[0];
  return row?.plain ? { events: json<Row[]>(row.events).map(toEvent), sampled: row.sampled } : null;
}

/** One sliver's figures from a report a replica absorbed, written later with others. */
export interface QueuedUsage {
  node: string;
  id: string;
  usage: S.SliverUsage;
}

/**
 * Writes the figures of many nodes' reports in one statement, as usage samples: one per sliver
 * where none is younger than the sample interval (a replica queues a node's figures about once an
 * interval). The sliver's row is not rewritten: reads take the newer of its figures and its
 * latest sample (latestUsage in slivers.ts). A sliver no longer on the reporting node is dropped.
 * Nothing is locked: a sample has no foreign key to its sliver (migration 014), so the flush never
 * waits on a report or a delete; one written while its sliver is being deleted is left to the
 * retention prune.
 */
export async function writeQueuedUsage(q: Queryable, rows: QueuedUsage[], sampleSeconds: number): Promise<{ sampled: number }> {
  if (!rows.length) return { sampled: 0 };
  const { rowCount } = await q.query(
    `WITH o AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb) AS o(node uuid, id uuid, usage jsonb)
     ), l AS (
       SELECT s.id, o.usage FROM slivers s JOIN o ON o.id = s.id AND s.node_id = o.node
     )
     ${insertSamplesSql({ from: 'l', row: 'l', minAge: '$2' })}`,
    [JSON.stringify(rows), sampleSeconds],
  );
  return { sampled: rowCount };
}
