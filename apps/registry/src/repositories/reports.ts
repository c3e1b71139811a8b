// A node's routine report in one statement: nothing in it calls for an event, so it writes only the
// figures that moved, the usage samples that are due, and the node's last_seen once it has aged.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';

/** One reported sliver as the statement takes it (error already cut, duplicates folded). */
export interface RoutineSliver {
  id: string;
  state: S.SliverState | 'deleted';
  error: string | null;
  /** null with keep_address: the report said nothing of the address. */
  address: string | null;
  keep_address: boolean;
  usage: S.SliverUsage | null;
  watchdog_hold: S.WatchdogHold | null;
}

export interface RoutineReport {
  slivers: RoutineSliver[];
  /** What the report says the node can do, as stored; null: not reported. */
  capabilities: S.NodeCapabilities | null;
  /** The front door as stored (null: none); undefined: not reported. */
  frontDoor: S.FrontDoor | null | undefined;
  images: S.NodeImage[] | null;
  /** last_seen is rewritten only when older than this. */
  seenRefreshSeconds: number;
  /** At most one usage sample per sliver this often (minus a margin the caller gives). */
  sampleSeconds: number;
}

/**
 * Applies a report that changes nothing anyone hears about: the node is online with the same
 * capabilities and front door, every sliver's state and error are what the registry has, and no
 * deleting sliver is gone. Answers false, having written nothing, when any of that fails: the
 * caller then applies the report in full (events and all) in a transaction.
 *
 * One statement, so the rows it writes are locked only while it runs. It never writes a
 * sliver's state, error or desired value: an action landing meanwhile keeps what it wrote.
 */
export async function applyRoutineReport(q: Queryable, nodeId: string, r: RoutineReport): Promise<boolean> {
  const { rows } = await q.query<{ routine: boolean }>(
    `WITH o AS (
       SELECT * FROM jsonb_to_recordset($2::jsonb)
         AS o(id uuid, state text, error text, address text, keep_address boolean, usage jsonb, watchdog_hold jsonb)
     ), n AS (
       SELECT state, capabilities, front_door FROM nodes WHERE id = $1
     ), mine AS (
       SELECT s.id, s.state, s.desired, s.error, o.id AS oid, o.state AS ostate, o.error AS oerror
       FROM slivers s LEFT JOIN o ON o.id = s.id WHERE s.node_id = $1
     ), verdict AS (
       SELECT EXISTS (SELECT 1 FROM n WHERE n.state = 'online')
         AND ($3::jsonb IS NULL OR (SELECT bool_and((n.capabilities -> f) IS NOT DISTINCT FROM ($3::jsonb -> f))
                                    FROM n, unnest(ARRAY['lxc', 'kvm', 'kvm_accel', 'arch']) f))
         AND (NOT $4::boolean OR (SELECT front_door FROM n) IS NOT DISTINCT FROM $5::jsonb)
         AND NOT EXISTS (
           SELECT 1 FROM mine WHERE
             (desired = 'deleted' AND (oid IS NULL OR ostate = 'deleted'))
             OR (oid IS NOT NULL AND ostate <> 'deleted' AND (
               (CASE WHEN desired = 'deleted' AND ostate <> 'failed' THEN 'deleting' ELSE ostate END) IS DISTINCT FROM state
               OR oerror IS DISTINCT FROM error))
         ) AS routine
     ), slivers_written AS (
       UPDATE slivers s SET
         address = CASE WHEN o.keep_address THEN s.address ELSE o.address END,
         usage = COALESCE(o.usage || jsonb_build_object('at', now()), s.usage),
         watchdog_hold = o.watchdog_hold,
         updated_at = CASE WHEN s.watchdog_hold IS DISTINCT FROM o.watchdog_hold THEN now() ELSE s.updated_at END
       FROM o, verdict
       WHERE verdict.routine AND s.id = o.id AND s.node_id = $1 AND o.state <> 'deleted' AND (
         (NOT o.keep_address AND s.address IS DISTINCT FROM o.address)
         OR s.watchdog_hold IS DISTINCT FROM o.watchdog_hold
         OR (o.usage IS NOT NULL AND (s.usage IS NULL OR (s.usage - 'at') IS DISTINCT FROM o.usage
             OR (s.usage ->> 'at')::timestamptz < now() - $8::float8 * interval '1 second')))
       RETURNING s.id
     ), node_written AS (
       UPDATE nodes SET last_seen = now(), images = COALESCE($6::jsonb, images)
       FROM verdict
       WHERE verdict.routine AND id = $1 AND (last_seen IS NULL OR last_seen < now() - $7::float8 * interval '1 second'
         OR ($6::jsonb IS NOT NULL AND images IS DISTINCT FROM $6::jsonb))
       RETURNING id
     ), sampled AS (
       INSERT INTO sliver_usage (sliver, at, cpu_seconds, memory_bytes, disk_bytes, net_rx_bytes, net_tx_bytes)
       SELECT o.id, now(), (o.usage ->> 'cpu_seconds')::float8, (o.usage ->> 'memory_bytes')::bigint, (o.usage ->> 'disk_bytes')::bigint,
              (o.usage ->> 'net_rx_bytes')::bigint, (o.usage ->> 'net_tx_bytes')::bigint
       FROM o, verdict
       WHERE verdict.routine AND o.usage IS NOT NULL AND o.state <> 'deleted' AND o.id IN (SELECT id FROM mine)
         AND NOT EXISTS (SELECT 1 FROM sliver_usage u WHERE u.sliver = o.id AND u.at > now() - $8::float8 * interval '1 second')
       RETURNING sliver
     )
     SELECT routine FROM verdict`,
    [
      nodeId,
      JSON.stringify(r.slivers),
      r.capabilities && JSON.stringify(r.capabilities),
      r.frontDoor !== undefined,
      r.frontDoor ? JSON.stringify(r.frontDoor) : null,
      r.images && JSON.stringify(r.images),
      r.seenRefreshSeconds,
      r.sampleSeconds,
    ],
  );
  return rows[0]?.routine === true;
}
