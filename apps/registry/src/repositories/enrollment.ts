// Enrollment tokens: single-use secrets a site's tech or pi hands to a new node, stored hashed.
import type { Queryable } from '@planetlite/db';

export interface EnrollmentTokenRow {
  site: string;
  used_at: string | null;
  expires_at: string;
}

export async function insertEnrollmentToken(q: Queryable, t: { hash: string; site: string; createdBy: string; expires: Date }): Promise<void> {
  await q.query('INSERT INTO enrollment_tokens (token_hash, site, created_by, expires_at) VALUES ($1, $2, $3, $4)', [t.hash, t.site, t.createdBy, t.expires]);
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
