// Nodes: enrollment rows, liveness, what their agents report about themselves.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, isoOrNull, json, type Row } from './columns.js';

export function toNode(r: Row): S.Node {
  return {
    id: r.id as string,
    hostname: r.hostname as string,
    site: r.site as string,
    address: r.address as string,
    state: r.state as S.Node['state'],
    capabilities: json(r.capabilities),
    resources: json(r.resources),
    port_window: { first: r.port_first as number, last: r.port_last as number },
    last_seen: isoOrNull(r.last_seen),
    images: json(r.images),
    created_at: iso(r.created_at),
    admin_state: r.admin_state as S.Node['admin_state'],
    key_revoked_at: isoOrNull(r.key_revoked_at),
    ...(r.sliver_count !== undefined ? { slivers: Number(r.sliver_count), free_ports: (r.port_last as number) - (r.port_first as number) + 1 - Number(r.ports_used) } : {}),
    front_door: r.front_door ? json<S.FrontDoor>(r.front_door) : null,
    ...(r.spares !== undefined ? { spares: (json<unknown[] | null>(r.spares) ?? []).length } : {}),
    location: r.location ? json<S.NodeLocation>(r.location) : null,
  };
}

/** Its slivers and the ports they hold, for the lists researchers pick nodes from. */
const WITH_USE = `nodes.*,
  (SELECT count(*) FROM slivers s WHERE s.node_id = nodes.id) AS sliver_count,
  (SELECT coalesce(sum(s.port_last - s.port_first + 1), 0) FROM slivers s WHERE s.node_id = nodes.id) AS ports_used`;

/** Nodes of a site (or all), without decommissioned ones unless all. */
export async function listNodes(q: Queryable, site: string | null, all = false): Promise<S.Node[]> {
  const { rows } = await q.query(
    `SELECT ${WITH_USE} FROM nodes WHERE ($1::text IS NULL OR site = $1) AND ($2 OR admin_state <> 'decommissioned') ORDER BY hostname`,
    [site, all],
  );
  return rows.map(toNode);
}

export async function findNode(q: Queryable, id: string, lock = false): Promise<S.Node | null> {
  const { rows } = await q.query(`SELECT ${lock ? '*' : WITH_USE} FROM nodes WHERE id = $1${lock ? ' FOR NO KEY UPDATE' : ''}`, [id]);
  return rows[0] ? toNode(rows[0]) : null;
}

/** A node a sliver of this slice is to go on, locked, and whether the slice has one there already. */
export async function findNodeToPlace(q: Queryable, id: string, slice: string): Promise<{ node: S.Node; sliceHasSliver: boolean } | null> {
  const { rows } = await q.query(
    'SELECT *, EXISTS (SELECT 1 FROM slivers s WHERE s.slice = $2 AND s.node_id = $1) AS slice_has_sliver FROM nodes WHERE id = $1 FOR NO KEY UPDATE',
    [id, slice],
  );
  return rows[0] ? { node: toNode(rows[0]), sliceHasSliver: rows[0].slice_has_sliver as boolean } : null;
}

export interface KeyHolder {
  id: string;
  site: string;
  revokedAt: string | null;
  /** The key is the node's pending new one (rotation): its first use makes it the key. */
  pending: boolean;
  /** The node's previous key, good until this moment (ms since the epoch); null: its key. */
  until: number | null;
}

/**
 * The node holding this key: its key, its pending new key, or its old key within the grace after a
 * rotation. Looked up on a request unless its replica remembers it (services/principals.ts).
 */
export async function nodeOfKey(q: Queryable, hash: string): Promise<KeyHolder | null> {
  const { rows } = await q.query<{ id: string; site: string; key_revoked_at: Date | string | null; pending: boolean; until: Date | null }>(
    `SELECT id, site, key_revoked_at, next_key_hash IS NOT DISTINCT FROM $1 AS pending,
       CASE WHEN key_hash = $1 OR next_key_hash = $1 THEN NULL ELSE prev_key_until END AS until FROM nodes
     WHERE key_hash = $1 OR next_key_hash = $1 OR (prev_key_hash = $1 AND prev_key_until > now())`,
    [hash],
  );
  const n = rows[0];
  return n ? { id: n.id, site: n.site, revokedAt: isoOrNull(n.key_revoked_at), pending: n.pending, until: n.until === null ? null : new Date(n.until).getTime() } : null;
}

/** Makes the pending key the node's key; the old one keeps working for graceSeconds. false if another request did it first. */
export async function promoteNextKey(q: Queryable, id: string, hash: string, graceSeconds: number): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE nodes SET prev_key_hash = key_hash, prev_key_until = now() + $3::float8 * interval '1 second', key_hash = next_key_hash, next_key_hash = NULL
     WHERE id = $1 AND next_key_hash = $2 AND key_revoked_at IS NULL`,
    [id, hash, graceSeconds],
  );
  return rowCount > 0;
}

/** Stores a new key that becomes the node's key on its first use (a newer one replaces it). */
export async function setNextKey(q: Queryable, id: string, hash: string): Promise<boolean> {
  const { rowCount } = await q.query('UPDATE nodes SET next_key_hash = $2 WHERE id = $1 AND key_revoked_at IS NULL', [id, hash]);
  return rowCount > 0;
}

/** Revokes every key of the node; null if it was revoked already. */
export async function revokeKeys(q: Queryable, id: string): Promise<S.Node | null> {
  const { rows } = await q.query(
    `UPDATE nodes SET key_revoked_at = now(), next_key_hash = NULL, prev_key_hash = NULL, prev_key_until = NULL
     WHERE id = $1 AND key_revoked_at IS NULL RETURNING *`,
    [id],
  );
  return rows[0] ? toNode(rows[0]) : null;
}

export async function setAdminState(q: Queryable, id: string, state: S.Node['admin_state']): Promise<S.Node> {
  const { rows } = await q.query('UPDATE nodes SET admin_state = $2 WHERE id = $1 RETURNING *', [id, state]);
  return toNode(rows[0]!);
}

/** Sets or clears (null) where the node stands. */
export async function setNodeLocation(q: Queryable, id: string, location: S.NodeLocation | null): Promise<void> {
  await q.query('UPDATE nodes SET location = $2::jsonb WHERE id = $1', [id, location && JSON.stringify(location)]);
}

export async function lockNodeByHostname(q: Queryable, hostname: string): Promise<{ id: string; site: string } | null> {
  const { rows } = await q.query<{ id: string; site: string }>('SELECT id, site FROM nodes WHERE hostname = $1 FOR NO KEY UPDATE', [hostname]);
  return rows[0] ?? null;
}

export interface NodeEnrollment {
  address: string;
  capabilities: S.NodeCapabilities;
  resources: S.NodeResources;
  window: S.PortRange;
  keyHash: string;
}

const enrollmentValues = (e: NodeEnrollment) => [e.address, JSON.stringify(e.capabilities), JSON.stringify(e.resources), e.window.first, e.window.last, e.keyHash];

export async function insertNode(q: Queryable, id: string, site: string, hostname: string, e: NodeEnrollment): Promise<void> {
  await q.query(
    `INSERT INTO nodes (id, site, hostname, address, capabilities, resources, port_first, port_last, key_hash)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [id, site, hostname, ...enrollmentValues(e)],
  );
}

/** Re-enrollment: a new key, address and window for the same node, back in service. */
export async function reenrollNode(q: Queryable, id: string, e: NodeEnrollment): Promise<void> {
  await q.query(
    `UPDATE nodes SET address = $2, capabilities = $3, resources = $4, port_first = $5, port_last = $6, key_hash = $7,
       admin_state = 'active', key_revoked_at = NULL, next_key_hash = NULL, prev_key_hash = NULL, prev_key_until = NULL WHERE id = $1`,
    [id, ...enrollmentValues(e)],
  );
}

/** Records a call from the node; answers the state it had before. */
export async function markNodeSeen(q: Queryable, id: string): Promise<S.Node['state'] | null> {
  // One statement: the old state is read under the row lock the update takes.
  const { rows } = await q.query<{ state: S.Node['state'] }>(
    `WITH before AS (SELECT id, state FROM nodes WHERE id = $1 FOR NO KEY UPDATE)
     UPDATE nodes n SET last_seen = now(), state = 'online' FROM before WHERE n.id = before.id RETURNING before.state`,
    [id],
  );
  return rows[0]?.state ?? null;
}

/**
 * A call from an online node: rewrites last_seen only once it is older than refreshSeconds, in one
 * statement. Answers the state the node had (null: no such node); the caller handles an offline one.
 */
export async function touchNodeSeen(q: Queryable, id: string, refreshSeconds: number): Promise<S.Node['state'] | null> {
  const { rows } = await q.query<{ state: S.Node['state'] }>(
    `WITH touched AS (
       UPDATE nodes SET last_seen = now() WHERE id = $1 AND state = 'online' AND (last_seen IS NULL OR last_seen < now() - make_interval(secs => $2))
     )
     SELECT state FROM nodes WHERE id = $1`,
    [id, refreshSeconds],
  );
  return rows[0]?.state ?? null;
}

/**
 * Calls from many nodes, gathered by a replica: rewrites last_seen of the online ones in one
 * statement. A node whose row another write holds right now is skipped (SKIP LOCKED: a batch never
 * waits on, nor makes wait, a node's own calls); answers those, and the ids of the nodes that are
 * not online (the caller records their return).
 */
export async function touchNodesSeen(q: Queryable, ids: string[]): Promise<{ notOnline: string[]; skipped: string[] }> {
  if (!ids.length) return { notOnline: [], skipped: [] };
  const { rows } = await q.query<{ id: string; state: S.Node['state'] }>(
    `WITH l AS MATERIALIZED (
       SELECT id, state FROM nodes WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
     ), touched AS (
       UPDATE nodes n SET last_seen = now() FROM l WHERE n.id = l.id AND l.state = 'online'
     )
     SELECT id, state FROM l`,
    [ids],
  );
  const got = new Set(rows.map((r) => r.id));
  return { notOnline: rows.filter((r) => r.state !== 'online').map((r) => r.id), skipped: ids.filter((id) => !got.has(id)) };
}

export async function nodeCapabilities(q: Queryable, id: string): Promise<S.NodeCapabilities | null> {
  const { rows } = await q.query('SELECT capabilities FROM nodes WHERE id = $1', [id]);
  return rows[0] ? json<S.NodeCapabilities>(rows[0].capabilities) : null;
}

export async function setNodeCapabilities(q: Queryable, id: string, caps: S.NodeCapabilities): Promise<void> {
  await q.query('UPDATE nodes SET capabilities = $2 WHERE id = $1', [id, JSON.stringify(caps)]);
}

export async function setNodeImages(q: Queryable, id: string, images: S.NodeImage[]): Promise<void> {
  await q.query('UPDATE nodes SET images = $2 WHERE id = $1', [id, JSON.stringify(images)]);
}

/** Records the node's front door; true when it changed (a new host key, port, or none). */
export async function setNodeFrontDoor(q: Queryable, id: string, door: S.FrontDoor | null): Promise<boolean> {
  const { rowCount } = await q.query('UPDATE nodes SET front_door = $2::jsonb WHERE id = $1 AND front_door IS DISTINCT FROM $2::jsonb', [id, door && JSON.stringify(door)]);
  return (rowCount ?? 0) > 0;
}

/** Records the spares the node's report lists (its warm pool), when they differ from those stored. */
export async function setNodeSpares(q: Queryable, id: string, spares: S.NodeSpare[]): Promise<void> {
  await q.query('UPDATE nodes SET spares = $2::jsonb WHERE id = $1 AND spares IS DISTINCT FROM $2::jsonb', [id, JSON.stringify(spares)]);
}

/**
 * The id of a spare the node keeps ready for a new sliver of this kind and image (the first one
 * its report listed), taken off the node's spares; null: none. A listed spare whose id is already
 * a sliver's (a report older than the hand-out, or a node that lies) is never given and is dropped
 * from the list too. One statement; the caller holds the node's row lock, so two creations on one
 * node never take the same spare.
 */
export async function takeSpare(q: Queryable, nodeId: string, want: { kind: S.Slice['kind']; image: string; sha256: string | null }): Promise<string | null> {
  const { rows } = await q.query<{ id: string }>(
    `WITH listed AS MATERIALIZED (
       SELECT e.spare, e.i, EXISTS (SELECT 1 FROM slivers s WHERE s.id = (e.spare ->> 'id')::uuid) AS used
       FROM nodes n, jsonb_array_elements(n.spares) WITH ORDINALITY AS e(spare, i)
       WHERE n.id = $1
     ), pick AS (
       SELECT spare ->> 'id' AS id FROM listed
       WHERE NOT used AND spare ->> 'kind' = $2
         AND CASE WHEN $3::text IS NULL THEN spare ->> 'image' = $4 ELSE spare ->> 'image_sha256' = $3 END
       ORDER BY i LIMIT 1
     ), written AS (
       UPDATE nodes SET spares = COALESCE(
         (SELECT jsonb_agg(spare ORDER BY i) FROM listed WHERE NOT used AND spare ->> 'id' IS DISTINCT FROM (SELECT id FROM pick)),
         '[]'::jsonb)
       WHERE id = $1 AND (EXISTS (SELECT 1 FROM pick) OR EXISTS (SELECT 1 FROM listed WHERE used))
     )
     SELECT id FROM pick`,
    [nodeId, want.kind, want.sha256, want.image],
  );
  return rows[0]?.id ?? null;
}

/**
 * Marks at most `limit` online nodes silent since cutoff offline; answers them. Rows a poll or
 * report holds at that moment are skipped (that node is talking), so the sweep never waits on
 * them and they never wait on the sweep.
 */
export async function markSilentNodesOffline(q: Queryable, cutoff: Date, limit: number): Promise<Array<{ id: string; hostname: string }>> {
  const { rows } = await q.query<{ id: string; hostname: string }>(
    `UPDATE nodes SET state = 'offline' WHERE id IN (
       SELECT id FROM nodes WHERE state = 'online' AND (last_seen IS NULL OR last_seen < $1) ORDER BY id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED)
     RETURNING id, hostname`,
    [cutoff, limit],
  );
  return rows;
}
