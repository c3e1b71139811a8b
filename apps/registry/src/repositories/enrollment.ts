// Enrollment tokens: single-use secrets a site's tech or pi hands to a new node, stored hashed.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, type Row } from './columns.js';

export interface EnrollmentTokenRow {
  site: string;
  used_at: string | null;
  expires_at: string;
}

/** Stores a token's hash; answers its id. */
export async function insertEnrollmentToken(q: Queryable, t: { hash: string; site: string; createdBy: string; expires: Date }): Promise<string> {
  const { rows } = await q.query<{ id: string }>(
    'INSERT INTO enrollment_tokens (token_hash, site, created_by, expires_at) VALUES ($1, $2, $3, $4) RETURNING id',
    [t.hash, t.site, t.createdBy, t.expires],
  );
  return rows[0]!.id;
}

export function toEnrollmentTokenInfo(r: Row): S.EnrollmentTokenInfo {
  return { id: r.id as string, site: r.site as string, created_by: (r.created_by as string | null) ?? null, created_at: iso(r.created_at), expires_at: iso(r.expires_at) };
}

/** A site's tokens that can still enroll a node, oldest first. */
export async function unusedEnrollmentTokens(q: Queryable, site: string): Promise<S.EnrollmentTokenInfo[]> {
  const { rows } = await q.query(
    'SELECT id, site, created_by, created_at, expires_at FROM enrollment_tokens WHERE site = $1 AND used_at IS NULL AND expires_at > now() ORDER BY created_at, id',
    [site],
  );
  return rows.map(toEnrollmentTokenInfo);
}

/** Deletes an unused token of the site; false when there is none with this id. */
export async function deleteUnusedEnrollmentToken(q: Queryable, site: string, id: string): Promise<boolean> {
  const { rowCount } = await q.query('DELETE FROM enrollment_tokens WHERE site = $1 AND id = $2 AND used_at IS NULL', [site, id]);
  return rowCount > 0;
}

/** The token, locked until the transaction ends so two nodes cannot use it at once. */
export async function lockEnrollmentToken(q: Queryable, hash: string): Promise<EnrollmentTokenRow | null> {
  const { rows } = await q.query<{ site: string; used_at: Date | string | null; expires_at: Date | string }>(
    'SELECT site, used_at, expires_at FROM enrollment_tokens WHERE token_hash = $1 FOR NO KEY UPDATE',
    [hash],
  );
  const t = rows[0];
  if (!t) return null;
  return { site: t.site, used_at: t.used_at == null ? null : new Date(t.used_at).toISOString(), expires_at: new Date(t.expires_at).toISOString() };
}

export async function markEnrollmentTokenUsed(q: Queryable, hash: string, nodeId: string): Promise<void> {
  await q.query('UPDATE enrollment_tokens SET used_at = now(), node_id = $2 WHERE token_hash = $1', [hash, nodeId]);
}
