// Slivers: a slice's share of one node, its ports, its desired and observed state.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, json, type Row } from './columns.js';
import { toEvent } from './events.js';

/**
 * A sliver's latest figures: the newer of those its row keeps (written with a report the registry
 * wrote) and its latest usage sample's (a replica's flush writes the figures of the reports it took
 * from memory as samples alone; rewriting every sliver's row beside each sample was half of the
 * flush at 10,000 nodes). `latestUsage('s')` gives the column (usage_now) and the join it reads,
 * one step down sliver_usage's (sliver, at) index. Written into each query rather than a
 * SQL function, whose body PostgreSQL plans again for every statement (GET /v1/slivers/{id} lost a
 * fifth of its rate that way).
 */
const latestUsage = (s: string) => ({
  column: `CASE WHEN lu.at IS NULL OR (${s}.usage ->> 'at')::timestamptz >= lu.at THEN ${s}.usage
    ELSE jsonb_strip_nulls(jsonb_build_object('cpu_seconds', lu.cpu_seconds, 'memory_bytes', lu.memory_bytes, 'disk_bytes', lu.disk_bytes,
      'net_rx_bytes', lu.net_rx_bytes, 'net_tx_bytes', lu.net_tx_bytes, 'at', lu.at)) END AS usage_now`,
  join: `LEFT JOIN LATERAL (SELECT * FROM sliver_usage u WHERE u.sliver = ${s}.id ORDER BY u.at DESC LIMIT 1) lu ON true`,
});
const usageOfS = latestUsage('s');
const usageOfD = latestUsage('d');

const SLIVER_SELECT = `SELECT s.*, ${usageOfS.column}, n.address AS node_address FROM slivers s JOIN nodes n ON n.id = s.node_id ${usageOfS.join}`;

// The database writes now() into the jsonb in its own format; the API speaks toISOString's.
function toUsage(u: S.SliverUsage): S.SliverUsage {
  return u.at === undefined ? u : { ...u, at: iso(u.at) };
}

/** r must carry the node's address as node_address and the sliver's latest figures as usage_now
 * (see SLIVER_SELECT). */
export function toSliver(r: Row): S.Sliver {
  const first = r.port_first as number;
  return {
    id: r.id as string,
    slice: r.slice as string,
    node_id: r.node_id as string,
    kind: r.kind as S.Sliver['kind'],
    state: r.state as S.Sliver['state'],
    desired: r.desired as S.Sliver['desired'],
    address: (r.address as string | null) ?? null,
    ports: { first, last: r.port_last as number },
    ssh: { host: r.node_address as string, port: first, user: r.slice as string },
    error: (r.error as string | null) ?? null,
    usage: r.usage_now == null ? null : toUsage(json<S.SliverUsage>(r.usage_now)),
    watchdog_hold: r.watchdog_hold == null ? null : json<S.WatchdogHold>(r.watchdog_hold),
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

export async function findSliver(q: Queryable, id: string): Promise<S.Sliver | null> {
  const { rows } = await q.query(`${SLIVER_SELECT} WHERE s.id = $1`, [id]);
  return rows[0] ? toSliver(rows[0]) : null;
}

/** A sliver, with what deciding who may touch it takes: its slice's site, and whether the user
 * is a member of its slice. One statement (the hot GET /v1/slivers/{id}). */
export async function findSliverFor(q: Queryable, id: string, userId: string): Promise<{ sliver: S.Sliver; site: string; member: boolean } | null> {
  const { rows } = await q.query(
    `SELECT s.*, ${usageOfS.column}, n.address AS node_address, sl.site AS slice_site,
       EXISTS (SELECT 1 FROM slice_members m WHERE m.slice = s.slice AND m.user_id = $2) AS slice_member
     FROM slivers s JOIN nodes n ON n.id = s.node_id JOIN slices sl ON sl.name = s.slice ${usageOfS.join}
     WHERE s.id = $1`,
    [id, userId],
  );
  const r = rows[0];
  return r ? { sliver: toSliver(r), site: r.slice_site as string, member: r.slice_member as boolean } : null;
}

/** A sliver a statement wrote and answered as to_jsonb of its row (sliver), with node_address and usage_now. */
function writtenSliver(r: Row): S.Sliver {
  return toSliver({ ...json<Row>(r.sliver), node_address: r.node_address, usage_now: r.usage_now });
}

export async function sliversOfSlice(q: Queryable, slice: string): Promise<S.Sliver[]> {
  const { rows } = await q.query(`${SLIVER_SELECT} WHERE s.slice = $1 ORDER BY s.created_at, s.id`, [slice]);
  return rows.map(toSliver);
}

export async function nodesOfSlice(q: Queryable, slice: string): Promise<string[]> {
  const { rows } = await q.query<{ node_id: string }>('SELECT node_id FROM slivers WHERE slice = $1', [slice]);
  return rows.map((r) => r.node_id);
}

/** Nodes with a sliver of a slice that names this image (they learn its hash and magnet once it is published). */
export async function nodesOfImage(q: Queryable, image: string): Promise<string[]> {
  const { rows } = await q.query<{ node_id: string }>('SELECT DISTINCT s.node_id FROM slivers s JOIN slices sl ON sl.name = s.slice WHERE sl.image = $1', [image]);
  return rows.map((r) => r.node_id);
}

/**
 * The first port of a free run of `count` ports in the window, or null when none is left: right
 * after the node's highest range while the window has room there (one step down an index, however
 * many slivers the node has), else the lowest free run. That one is found in the database: the
 * node's ranges in port order, each gap between the highest port taken so far and the next range
 * (ranges outside the window or overlapping are passed over), which reads every range of the node
 * under the node's lock that every creation on it waits for: with it alone, 5,000 new slivers on one
 * node came half as fast (docs/benchmarks.md). So a freed range is given out again only once the
 * window's top is reached.
 */
export async function firstFreePort(q: Queryable, nodeId: string, window: S.PortRange, count: number): Promise<number | null> {
  const { rows } = await q.query<{ start: number }>(
    `WITH above AS (
       SELECT greatest($2::int, coalesce((SELECT port_last + 1 FROM slivers WHERE node_id = $1 ORDER BY port_first DESC LIMIT 1), $2::int)) AS start
     ), r AS (SELECT port_first, port_last FROM slivers WHERE node_id = $1),
     gaps AS (
       SELECT $2::int AS start, (SELECT min(port_first) FROM r) AS next
       UNION ALL
       SELECT greatest($2::int, max(port_last) OVER w + 1), lead(port_first) OVER w
       FROM r WINDOW w AS (ORDER BY port_first, port_last ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
     )
     (SELECT start FROM above WHERE start + $4 - 1 <= $3::int)
     UNION ALL
     (SELECT start FROM gaps
      WHERE coalesce(next, $3::int + 1) - start >= $4 AND start + $4 - 1 <= $3::int
      ORDER BY start LIMIT 1)
     LIMIT 1`,
    [nodeId, window.first, window.last, count],
  );
  return rows[0]?.start ?? null;
}

/** Whether a sliver on the node has ports outside this window (a re-enrollment may not shrink past them). */
export async function portsOutside(q: Queryable, nodeId: string, window: S.PortRange): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM slivers WHERE node_id = $1 AND (port_first < $2 OR port_last > $3) LIMIT 1', [nodeId, window.first, window.last]);
  return rows.length > 0;
}

/**
 * A new sliver, under its site's quota: the site's row locked, the insert, its event and the
 * sliver as made, in one statement, so that the lock every new sliver of the site waits on is held
 * across that statement and the commit alone. Null when the site has no room left (its
 * max_slivers, answered); the caller's transaction then rolls back.
 */
export async function insertSliver(
  q: Queryable,
  s: { id: string; slice: string; site: string; nodeId: string; kind: S.Slice['kind']; ports: S.PortRange },
  data: Record<string, unknown>,
): Promise<{ sliver: S.Sliver; event: S.Event } | { maxSlivers: number }> {
  const { rows } = await q.query(
    // A new sliver has no figures yet (usage_now is left out).
    `WITH site AS (
       SELECT login_base, max_slivers, sliver_count FROM sites WHERE login_base = $3 FOR NO KEY UPDATE
     ), made AS (
       INSERT INTO slivers (id, slice, site, node_id, kind, port_first, port_last)
       SELECT $1::uuid, $2::text, login_base, $4::uuid, $5::text, $6::int, $7::int FROM site WHERE sliver_count < max_slivers
       RETURNING *
     ), e AS (
       INSERT INTO events (type, slice, node, sliver, data) SELECT 'sliver.state', slice, node_id, id, $8::jsonb FROM made
       RETURNING *
     )
     SELECT site.max_slivers, to_jsonb(made) AS sliver, n.address AS node_address, (SELECT to_jsonb(e) FROM e) AS event
     FROM (SELECT 1) one LEFT JOIN site ON true LEFT JOIN made ON true LEFT JOIN nodes n ON n.id = made.node_id`,
    [s.id, s.slice, s.site, s.nodeId, s.kind, s.ports.first, s.ports.last, JSON.stringify(data)],
  );
  const r = rows[0]!;
  if (r.sliver == null) return { maxSlivers: (r.max_slivers as number | null) ?? 0 };
  return { sliver: writtenSliver(r), event: toEvent(json<Row>(r.event)) };
}

const ACTION_SQL: Record<S.SliverAction['action'], string> = {
  start: "desired = 'running'",
  stop: "desired = 'stopped'",
  restart: "desired = 'running', restart_seq = restart_seq + 1",
  reset: "desired = 'running', reset_seq = reset_seq + 1",
  freeze: "desired = 'frozen'",
  thaw: "desired = 'running', thaw_seq = thaw_seq + 1",
};

const DELETE_SQL = "desired = 'deleted', state = 'deleting'";

/** Who asks for a sliver change, as the statement decides whether they may (authz's roleOf). */
export interface SliverActor {
  userId: string;
  email: string;
  admin: boolean;
  /** The site whose slices the caller oversees as its pi. */
  piSite: string | null;
}

/** What a sliver change did: the sliver as it now is and the event it wrote; or why it did not. */
export type SliverChange =
  | { done: true; sliver: S.Sliver; event: S.Event }
  | { done: false; why: 'not_found' | 'forbidden' | 'deleted'; slice: string | null };

/**
 * A user's action on a sliver, or its teardown ('delete'), in one statement: whether they may, the
 * row's update, its event, and the sliver as it now is. The row is locked for that statement
 * alone; as four statements in a transaction it stayed locked across six round trips, each
 * waiting for a registry busy with thousands of nodes to come back to it (docs/benchmarks.md).
 * The update's test of `desired` is made again on the row's latest version, so nothing acts on a
 * sliver a racing delete marked.
 */
export async function changeSliver(q: Queryable, id: string, change: S.SliverAction['action'] | 'delete', who: SliverActor): Promise<SliverChange> {
  const [set, type, data] = change === 'delete'
    ? [DELETE_SQL, 'sliver.state', { state: 'deleting', by: who.email }]
    : [ACTION_SQL[change], 'sliver.action', { action: change, by: who.email }];
  const { rows } = await q.query(
    `WITH t AS (
       SELECT s.id, s.slice, ($2::boolean OR coalesce(sl.site = $3, false)
           OR EXISTS (SELECT 1 FROM slice_members m WHERE m.slice = s.slice AND m.user_id = $4)) AS allowed
       FROM slivers s JOIN slices sl ON sl.name = s.slice WHERE s.id = $1
     ), done AS (
       UPDATE slivers s SET ${set}, updated_at = now() FROM t
       WHERE s.id = t.id AND t.allowed AND s.desired <> 'deleted'
       RETURNING s.*
     ), e AS (
       INSERT INTO events (type, slice, node, sliver, data) SELECT $5, d.slice, d.node_id, d.id, $6::jsonb FROM done d
       RETURNING *
     )
     SELECT t.slice, t.allowed, to_jsonb(d) AS sliver, ${usageOfD.column}, n.address AS node_address, (SELECT to_jsonb(e) FROM e) AS event
     FROM t LEFT JOIN done d ON true LEFT JOIN nodes n ON n.id = d.node_id ${usageOfD.join}`,
    [id, who.admin, who.piSite, who.userId, type, JSON.stringify(data)],
  );
  const r = rows[0];
  if (!r) return { done: false, why: 'not_found', slice: null };
  if (!r.allowed) return { done: false, why: 'forbidden', slice: r.slice as string };
  if (r.sliver == null) return { done: false, why: 'deleted', slice: r.slice as string };
  return { done: true, sliver: writtenSliver(r), event: toEvent(json<Row>(r.event)) };
}

/** Marks every sliver of a slice for teardown; answers them. */
export async function markSliceSliversDeleting(q: Queryable, slice: string): Promise<Array<{ id: string; node_id: string }>> {
  const { rows } = await q.query<{ id: string; node_id: string }>(
    "UPDATE slivers SET desired = 'deleted', state = 'deleting', updated_at = now() WHERE slice = $1 RETURNING id, node_id",
    [slice],
  );
  return rows;
}

/** Marks every sliver on a node for teardown (decommission); answers those not already going. */
export async function markNodeSliversDeleting(q: Queryable, nodeId: string): Promise<Array<{ id: string; slice: string }>> {
  const { rows } = await q.query<{ id: string; slice: string }>(
    "UPDATE slivers SET desired = 'deleted', state = 'deleting', updated_at = now() WHERE node_id = $1 AND desired <> 'deleted' RETURNING id, slice",
    [nodeId],
  );
  return rows;
}

export async function countSliversOn(q: Queryable, nodeId: string): Promise<number> {
  const { rows } = await q.query<{ n: number }>('SELECT count(*)::int AS n FROM slivers WHERE node_id = $1', [nodeId]);
  return rows[0]?.n ?? 0;
}

/** A sliver gone, with its usage samples (no foreign key takes them: migration 014). */
export async function deleteSliver(q: Queryable, id: string): Promise<void> {
  await q.query('WITH u AS (DELETE FROM sliver_usage WHERE sliver = $1) DELETE FROM slivers WHERE id = $1', [id]);
}

/** The slice of a sliver on this node, or null when the sliver is not there. */
export async function sliceOfSliverOn(q: Queryable, sliverId: string, nodeId: string): Promise<string | null> {
  const { rows } = await q.query<{ slice: string }>('SELECT slice FROM slivers WHERE id = $1 AND node_id = $2', [sliverId, nodeId]);
  return rows[0]?.slice ?? null;
}

// ---- what a node reports ---------------------------------------------------------------------

export interface ReportedSliverRow {
  id: string;
  slice: string;
  state: S.SliverState;
  desired: S.Sliver['desired'];
  error: string | null;
  address: string | null;
}

/** The node's slivers, locked while its report is applied. */
/** The node's slivers (only these ids, when given), locked for a report. */
export async function lockSliversOfNode(q: Queryable, nodeId: string, ids?: readonly string[]): Promise<ReportedSliverRow[]> {
  const { rows } = ids
    ? await q.query<ReportedSliverRow>('SELECT id, slice, state, desired, error, address FROM slivers WHERE node_id = $1 AND id = ANY($2::uuid[]) ORDER BY id FOR NO KEY UPDATE', [nodeId, ids])
    : await q.query<ReportedSliverRow>('SELECT id, slice, state, desired, error, address FROM slivers WHERE node_id = $1 FOR NO KEY UPDATE', [nodeId]);
  return rows;
}

export interface SliverRefresh {
  id: string;
  state: string;
  error: string | null;
  address: string | null;
  usage: object | null;
  watchdog_hold: S.WatchdogHold | null;
}

/** Every reported sliver's row in one statement, not one per sliver (usage moves on every report). */
export async function refreshSlivers(q: Queryable, refresh: SliverRefresh[]): Promise<void> {
  if (!refresh.length) return;
  await q.query(
    `UPDATE slivers AS s SET state = o.state, error = o.error, address = o.address, usage = COALESCE(o.usage || jsonb_build_object('at', now()), s.usage), watchdog_hold = o.watchdog_hold,
       updated_at = CASE WHEN s.state IS DISTINCT FROM o.state OR s.error IS DISTINCT FROM o.error OR s.watchdog_hold IS DISTINCT FROM o.watchdog_hold THEN now() ELSE s.updated_at END
     FROM jsonb_to_recordset($1::jsonb) AS o(id uuid, state text, error text, address text, usage jsonb, watchdog_hold jsonb)
     WHERE s.id = o.id`,
    [JSON.stringify(refresh)],
  );
}

// ---- a node's desired state ------------------------------------------------------------------

export interface DesiredSliverRow {
  id: string;
  slice: string;
  kind: S.DesiredSliver['kind'];
  desired: S.DesiredSliver['desired'];
  restart_seq: number;
  reset_seq: number;
  thaw_seq: number;
  ports: S.PortRange;
  image: string;
  resources: S.SliceResources;
  memory_reset: S.DesiredSliver['memory_reset'];
  expires_at: string;
  sha256: string | null;
  magnet: string | null;
}

/** A node's desired state as one statement reads it: its row and its slivers with their slices' keys. */
export interface DesiredStateRows {
  address: string;
  port_window: S.PortRange;
  /** The node's key was revoked: its agent gets 401 node_key_revoked. */
  revoked: boolean;
  slivers: Array<DesiredSliverRow & { keys: string[] }>;
}

/**
 * The node's desired state in one statement (one pool connection, one snapshot), or null when
 * there is no such node. Slivers in id order, each slice's member keys sorted.
 */
export async function desiredStateRows(q: Queryable, nodeId: string): Promise<DesiredStateRows | null> {
  // One row per sliver (one with NULLs for a node without any), each slice's keys gathered once
  // for all its slivers here: building one jsonb document per node, with the keys looked up
  // again for every sliver, took 87 ms for a node of 2,000 slivers (docs/benchmarks.md).
  const { rows } = await q.query(
    `WITH mine AS (
       SELECT s.id, s.slice, s.kind, s.desired, s.restart_seq, s.reset_seq, s.thaw_seq, s.port_first, s.port_last,
              sl.image, sl.resources, sl.memory_reset, sl.expires_at, i.sha256, i.magnet
       FROM slivers s JOIN slices sl ON sl.name = s.slice LEFT JOIN images i ON i.name = sl.image
       WHERE s.node_id = $1),
     slice_keys AS (
       SELECT m.slice, array_agg(DISTINCT k.key ORDER BY k.key) AS keys
       FROM slice_members m JOIN ssh_keys k ON k.user_id = m.user_id
       WHERE m.slice IN (SELECT slice FROM mine)
       GROUP BY m.slice)
     SELECT n.address, n.port_first AS window_first, n.port_last AS window_last, n.key_revoked_at IS NOT NULL AS revoked,
            mine.*, slice_keys.keys
     FROM nodes n LEFT JOIN mine ON true LEFT JOIN slice_keys ON slice_keys.slice = mine.slice
     WHERE n.id = $1
     ORDER BY mine.id`,
    [nodeId],
    // Its generic plan made the first documents at 5,000 agents take 55 s, against 34 s planned
    // for each node (docs/benchmarks.md, 2026-12-04 17:33).
    { planEachCall: true },
  );
  const r = rows[0];
  if (!r) return null;
  return {
    address: r.address as string,
    port_window: { first: r.window_first as number, last: r.window_last as number },
    revoked: r.revoked as boolean,
    slivers: rows.filter((x) => x.id != null).map((x) => ({
      id: x.id as string,
      slice: x.slice as string,
      kind: x.kind as DesiredSliverRow['kind'],
      desired: x.desired as DesiredSliverRow['desired'],
      restart_seq: x.restart_seq as number,
      reset_seq: x.reset_seq as number,
      thaw_seq: x.thaw_seq as number,
      ports: { first: x.port_first as number, last: x.port_last as number },
      image: x.image as string,
      resources: json(x.resources),
      memory_reset: x.memory_reset as DesiredSliverRow['memory_reset'],
      expires_at: iso(x.expires_at),
      sha256: (x.sha256 as string | null) ?? null,
      magnet: (x.magnet as string | null) ?? null,
      keys: (x.keys as string[] | null) ?? [],
    })),
  };
}
