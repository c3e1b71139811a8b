// Slices and their members.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { AppError } from '@planetlite/core';
import { iso, json, type Row } from './columns.js';
import { toEvent } from './events.js';

/** A slice as stored; the API's Slice adds its members. */
export type SliceRecord = Omit<S.Slice, 'members'>;

export function toSlice(r: Row): SliceRecord {
  return {
    name: r.name as string,
    site: r.site as string,
    state: r.state as S.Slice['state'],
    description: r.description as string,
    url: r.url as string,
    kind: r.kind as S.Slice['kind'],
    image: r.image as string,
    expires_at: iso(r.expires_at),
    resources: json(r.resources),
    memory_reset: (r.memory_reset as S.Slice['memory_reset'] | undefined) ?? 'restart',
    created_at: iso(r.created_at),
  };
}

export async function findSlice(q: Queryable, name: string, lock = false): Promise<SliceRecord | null> {
  const { rows } = await q.query(`SELECT * FROM slices WHERE name = $1${lock ? ' FOR NO KEY UPDATE' : ''}`, [name]);
  return rows[0] ? toSlice(rows[0]) : null;
}

export async function sliceMembers(q: Queryable, name: string): Promise<S.SliceMember[]> {
  const { rows } = await q.query<S.SliceMember>(
    'SELECT u.id, u.email, u.name FROM slice_members m JOIN users u ON u.id = m.user_id WHERE m.slice = $1 ORDER BY u.email',
    [name],
  );
  return rows;
}

/** Members of several slices at once, by slice name. */
export async function membersOfSlices(q: Queryable, names: string[]): Promise<Map<string, S.SliceMember[]>> {
  const { rows } = await q.query<{ slice: string; id: string; email: string; name: string }>(
    'SELECT m.slice, u.id, u.email, u.name FROM slice_members m JOIN users u ON u.id = m.user_id WHERE m.slice = ANY($1) ORDER BY u.email',
    [names],
  );
  const out = new Map<string, S.SliceMember[]>(names.map((n) => [n, []]));
  for (const { slice, id, email, name } of rows) out.get(slice)?.push({ id, email, name });
  return out;
}

export async function isMember(q: Queryable, slice: string, userId: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM slice_members WHERE slice = $1 AND user_id = $2', [slice, userId]);
  return rows.length > 0;
}

/** Slices a caller may see: every one for admins, their site's for a pi, their own otherwise. */
export async function listVisibleSlices(q: Queryable, f: { site: string | null; admin: boolean; piSite: string | null; userId: string }): Promise<SliceRecord[]> {
  const { rows } = await q.query(
    `SELECT * FROM slices sl WHERE ($1::text IS NULL OR sl.site = $1)
       AND ($2 OR sl.site = $3 OR EXISTS (SELECT 1 FROM slice_members m WHERE m.slice = sl.name AND m.user_id = $4))
     ORDER BY sl.name`,
    [f.site, f.admin, f.piSite, f.userId],
  );
  return rows.map(toSlice);
}

export interface NewSlice {
  name: string;
  site: string;
  description: string;
  url: string;
  kind: S.Slice['kind'];
  image: string;
  resources: S.SliceResources;
  expires: Date;
  createdBy: string;
  memoryReset: S.Slice['memory_reset'];
}

/** SQLSTATE of the count trigger's refusal of a slice over its site's max_slices (migration 010). */
const SLICE_QUOTA_EXCEEDED = 'PLQ01';

/** What asking for a new slice found: its site, the image, and the slice made, if it was. */
export interface SliceCreation {
  /** The site's `enabled`; null when there is no such site. */
  siteEnabled: boolean | null;
  /** The kinds the image serves; null when the registry has not published it (nothing to check). */
  imageKinds: S.Image['kinds'] | null;
  /** The slice and its slice.created event; null when refused above or when the name is taken. */
  created: { slice: SliceRecord; event: S.Event } | null;
}

/**
 * A new slice with its creator as a member and its slice.created event (data), in one statement
 * and no transaction: made only on an enabled site and with an image that serves its kind, and
 * answering what it found of both, so a creation is one round trip to the database. The site's
 * row, which the count trigger locks to check max_slices, is held only while this statement runs.
 */
export async function createSlice(q: Queryable, s: NewSlice, data: Record<string, unknown>): Promise<SliceCreation> {
  let rows: Row[];
  try {
    ({ rows } = await q.query(
      `WITH site AS (
         SELECT enabled FROM sites WHERE login_base = $2
       ), img AS (
         SELECT kinds FROM images WHERE name = $6
       ), s AS (
         INSERT INTO slices (name, site, description, url, kind, image, resources, expires_at, created_by, memory_reset)
         SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::jsonb, $8::timestamptz, $9::uuid, $10::text
         FROM site WHERE site.enabled AND NOT EXISTS (SELECT 1 FROM img WHERE NOT $5::text = ANY (img.kinds))
         ON CONFLICT (name) DO NOTHING RETURNING *
       ), m AS (
         INSERT INTO slice_members (slice, user_id) SELECT name, created_by FROM s
       ), e AS (
         INSERT INTO events (type, slice, data) SELECT 'slice.created', name, $11::jsonb FROM s RETURNING *
       )
       SELECT (SELECT enabled FROM site) AS site_enabled, (SELECT kinds FROM img) AS image_kinds,
              s.*, to_jsonb(e) AS created_event
       FROM (VALUES (1)) one LEFT JOIN s ON true LEFT JOIN e ON true`,
      [s.name, s.site, s.description, s.url, s.kind, s.image, JSON.stringify(s.resources), s.expires, s.createdBy, s.memoryReset, JSON.stringify(data)],
    ));
  } catch (err) {
    const e = err as { code?: unknown; message?: unknown };
    if (e?.code === SLICE_QUOTA_EXCEEDED) throw new AppError('slice_quota_exceeded', String(e.message));
    throw err;
  }
  const r = rows[0]!;
  return {
    siteEnabled: (r.site_enabled as boolean | null) ?? null,
    imageKinds: (r.image_kinds as S.Image['kinds'] | null) ?? null,
    created: r.name == null ? null : { slice: toSlice(r), event: toEvent(json<Row>(r.created_event)) },
  };
}

/** true when the user was not a member yet. */
export async function addMember(q: Queryable, slice: string, userId: string): Promise<boolean> {
  const { rowCount } = await q.query('INSERT INTO slice_members (slice, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [slice, userId]);
  return rowCount > 0;
}

/** false when the user was no member. */
export async function removeMember(q: Queryable, slice: string, userId: string): Promise<boolean> {
  const { rowCount } = await q.query('DELETE FROM slice_members WHERE slice = $1 AND user_id = $2', [slice, userId]);
  return rowCount > 0;
}

export async function patchSlice(
  q: Queryable,
  name: string,
  p: { description: string | null; url: string | null; resources: S.SliceResources | null; memoryReset: S.Slice['memory_reset'] | null },
): Promise<SliceRecord> {
  const { rows } = await q.query(
    `UPDATE slices SET description = COALESCE($2, description), url = COALESCE($3, url), resources = COALESCE($4::jsonb, resources),
       memory_reset = COALESCE($5, memory_reset) WHERE name = $1 RETURNING *`,
    [name, p.description, p.url, p.resources ? JSON.stringify(p.resources) : null, p.memoryReset],
  );
  return toSlice(rows[0]!);
}

export async function setSliceExpiry(q: Queryable, name: string, until: Date): Promise<SliceRecord> {
  const { rows } = await q.query('UPDATE slices SET expires_at = $2 WHERE name = $1 RETURNING *', [name, until]);
  return toSlice(rows[0]!);
}

export async function markSliceDeleting(q: Queryable, name: string): Promise<void> {
  await q.query("UPDATE slices SET state = 'deleting' WHERE name = $1", [name]);
}

/** Removes a deleting slice once no sliver of it is left. */
export async function dropSliceIfEmpty(q: Queryable, name: string): Promise<void> {
  // Lock the slice first: two nodes confirming the slice's last two slivers at once would each
  // still see the other's sliver, and neither would drop the slice. With the lock, the second
  // waits for the first to commit and then sees both gone.
  await q.query("SELECT 1 FROM slices WHERE name = $1 AND state = 'deleting' FOR UPDATE", [name]);
  await q.query(
    "DELETE FROM slices WHERE name = $1 AND state = 'deleting' AND NOT EXISTS (SELECT 1 FROM slivers WHERE slice = $1)",
    [name],
  );
}

export async function expiredSliceNames(q: Queryable, now: Date): Promise<string[]> {
  const { rows } = await q.query<{ name: string }>("SELECT name FROM slices WHERE state = 'active' AND expires_at <= $1 ORDER BY name", [now]);
  return rows.map((r) => r.name);
}

/** Locks the slice if it is still active and expired (another replica may have swept it meanwhile). */
export async function lockIfExpired(q: Queryable, name: string, now: Date): Promise<boolean> {
  const { rows } = await q.query("SELECT 1 FROM slices WHERE name = $1 AND state = 'active' AND expires_at <= $2 FOR NO KEY UPDATE", [name, now]);
  return rows.length > 0;
}
