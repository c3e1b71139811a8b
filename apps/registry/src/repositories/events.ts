// The event log.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, json, type Row } from './columns.js';

export function toEvent(r: Row): S.Event {
  return {
    id: Number(r.id),
    at: iso(r.at),
    type: r.type as string,
    slice: (r.slice as string | null) ?? null,
    node: (r.node as string | null) ?? null,
    sliver: (r.sliver as string | null) ?? null,
    data: json(r.data),
  };
}

export interface NewEvent {
  type: string;
  slice?: string | null;
  node?: string | null;
  sliver?: string | null;
  data?: Record<string, unknown>;
}

export async function insertEvent(q: Queryable, e: NewEvent): Promise<S.Event> {
  const { rows } = await q.query(
    'INSERT INTO events (type, slice, node, sliver, data) VALUES ($1, $2, $3, $4, $5) RETURNING *',
    [e.type, e.slice ?? null, e.node ?? null, e.sliver ?? null, JSON.stringify(e.data ?? {})],
  );
  return toEvent(rows[0]!);
}

/** Many events in one statement. */
export async function insertEvents(q: Queryable, events: NewEvent[]): Promise<S.Event[]> {
  if (!events.length) return [];
  const { rows } = await q.query(
    `INSERT INTO events (type, slice, node, sliver, data)
     SELECT e.type, e.slice, e.node, e.sliver, e.data FROM jsonb_to_recordset($1::jsonb) AS e(type text, slice text, node uuid, sliver uuid, data jsonb)
     RETURNING *`,
    [JSON.stringify(events.map((e) => ({ type: e.type, slice: e.slice ?? null, node: e.node ?? null, sliver: e.sliver ?? null, data: e.data ?? {} })))],
  );
  return rows.map(toEvent).sort((a, b) => a.id - b.id);
}

export interface EventViewer {
  admin: boolean;
  /** The site whose slices' events the viewer sees as its pi. */
  piSite: string | null;
  userId: string;
}

/**
 * Admins see every event; others see node events and the events of slices they are a member
 * of or, as a pi, of their site (by name prefix, so a deleted slice's history stays visible).
 */
export async function listEvents(q: Queryable, who: EventViewer, f: S.EventQuery & { id?: number }): Promise<S.Event[]> {
  const { rows } = await q.query(
    `SELECT * FROM (SELECT * FROM events e
     WHERE ($1::bigint IS NULL OR e.id > $1) AND ($2::text IS NULL OR e.slice = $2)
       AND ($3::uuid IS NULL OR e.node = $3) AND ($4::text IS NULL OR e.type = $4)
       AND ($5::bigint IS NULL OR e.id = $5)
       AND ($6 OR e.slice IS NULL OR split_part(e.slice, '_', 1) = $7
            OR EXISTS (SELECT 1 FROM slice_members m WHERE m.slice = e.slice AND m.user_id = $8))
     ORDER BY e.id ${f.newest ? 'DESC' : ''} LIMIT $9) page ORDER BY id`,
    [f.after ?? null, f.slice ?? null, f.node ?? null, f.type ?? null, f.id ?? null, who.admin, who.piSite, who.userId, f.limit ?? 100],
  );
  return rows.map(toEvent);
}
