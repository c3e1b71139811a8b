// Users, their ssh keys and their login tokens.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, type Row } from './columns.js';

export function toUser(r: Row): S.User {
  return {
    id: r.id as string,
    email: r.email as string,
    name: r.name as string,
    site: (r.site as string | null) ?? null,
    roles: r.roles as S.Role[],
    created_at: iso(r.created_at),
  };
}

export function toKey(r: Row): S.SshKey {
  return {
    id: r.id as string,
    user_id: r.user_id as string,
    type: r.type as string,
    fingerprint: r.fingerprint as string,
    comment: r.comment as string,
    key: r.key as string,
    created_at: iso(r.created_at),
  };
}

export async function findUser(q: Queryable, id: string): Promise<S.User | null> {
  const { rows } = await q.query('SELECT * FROM users WHERE id = $1', [id]);
  return rows[0] ? toUser(rows[0]) : null;
}

/** The user with this email and their password hash, for login. */
export async function findUserForLogin(q: Queryable, email: string): Promise<{ user: S.User; passwordHash: string } | null> {
  const { rows } = await q.query('SELECT * FROM users WHERE email = $1', [email.toLowerCase()]);
  return rows[0] ? { user: toUser(rows[0]), passwordHash: rows[0].password_hash as string } : null;
}

export async function listUsers(q: Queryable, site: string | null): Promise<S.User[]> {
  const { rows } = await q.query('SELECT * FROM users WHERE ($1::text IS NULL OR site = $1) ORDER BY email', [site]);
  return rows.map(toUser);
}

export async function emailTaken(q: Queryable, email: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM users WHERE email = $1', [email.toLowerCase()]);
  return rows.length > 0;
}

export async function insertUser(q: Queryable, u: { id: string; email: string; name: string; passwordHash: string; site: string | null; roles: S.Role[] }): Promise<S.User> {
  const { rows } = await q.query(
    'INSERT INTO users (id, email, name, password_hash, site, roles) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
    [u.id, u.email.toLowerCase(), u.name, u.passwordHash, u.site, u.roles],
  );
  return toUser(rows[0]!);
}

export async function anyAdmin(q: Queryable): Promise<boolean> {
  const { rows } = await q.query("SELECT 1 FROM users WHERE 'admin' = ANY(roles) LIMIT 1");
  return rows.length > 0;
}

/** The first admin; an existing email is left alone (another replica may have just made it). */
export async function insertAdmin(q: Queryable, a: { id: string; email: string; passwordHash: string }): Promise<void> {
  await q.query(
    "INSERT INTO users (id, email, name, password_hash, roles) VALUES ($1, $2, 'Administrator', $3, '{admin}') ON CONFLICT (email) DO NOTHING",
    [a.id, a.email.toLowerCase(), a.passwordHash],
  );
}

/** Emails and names of a slice's members, for notices. */
export async function membersToNotify(q: Queryable, slice: string): Promise<Array<{ email: string; name: string }>> {
  const { rows } = await q.query<{ email: string; name: string }>(
    'SELECT u.email, u.name FROM slice_members m JOIN users u ON u.id = m.user_id WHERE m.slice = $1 ORDER BY u.email',
    [slice],
  );
  return rows;
}

// ---- ssh keys ---------------------------------------------------------------------------------

export async function listKeys(q: Queryable, userId: string): Promise<S.SshKey[]> {
  const { rows } = await q.query('SELECT * FROM ssh_keys WHERE user_id = $1 ORDER BY created_at, id', [userId]);
  return rows.map(toKey);
}

export async function keyRegistered(q: Queryable, userId: string, fingerprint: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM ssh_keys WHERE user_id = $1 AND fingerprint = $2', [userId, fingerprint]);
  return rows.length > 0;
}

export async function insertKey(q: Queryable, k: { id: string; userId: string; type: string; key: string; fingerprint: string; comment: string }): Promise<S.SshKey> {
  const { rows } = await q.query(
    'INSERT INTO ssh_keys (id, user_id, type, key, fingerprint, comment) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
    [k.id, k.userId, k.type, k.key, k.fingerprint, k.comment],
  );
  return toKey(rows[0]!);
}

/** false when the user has no such key. */
export async function deleteKey(q: Queryable, userId: string, keyId: string): Promise<boolean> {
  const { rowCount } = await q.query('DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2', [keyId, userId]);
  return rowCount > 0;
}

/** Nodes whose desired state carries this user's keys. */
export async function nodesOfMember(q: Queryable, userId: string): Promise<string[]> {
  const { rows } = await q.query<{ node_id: string }>(
    'SELECT DISTINCT s.node_id FROM slivers s JOIN slice_members m ON m.slice = s.slice WHERE m.user_id = $1',
    [userId],
  );
  return rows.map((r) => r.node_id);
}

// ---- login tokens -----------------------------------------------------------------------------

export interface TokenOwner {
  id: string;
  email: string;
  name: string;
  site: string | null;
  roles: S.Role[];
  expires_at: Date;
}

/** Whose unexpired token has this hash, and until when. */
export async function ownerOfToken(q: Queryable, hash: string): Promise<TokenOwner | null> {
  const { rows } = await q.query<TokenOwner>(
    `SELECT u.id, u.email, u.name, u.site, u.roles, t.expires_at FROM auth_tokens t JOIN users u ON u.id = t.user_id
     WHERE t.token_hash = $1 AND t.expires_at > now()`,
    [hash],
  );
  return rows[0] ?? null;
}

export async function insertToken(q: Queryable, hash: string, userId: string, expires: Date): Promise<void> {
  await q.query('INSERT INTO auth_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)', [hash, userId, expires]);
}

export async function pruneExpiredTokens(q: Queryable, userId: string): Promise<void> {
  await q.query('DELETE FROM auth_tokens WHERE user_id = $1 AND expires_at < now()', [userId]);
}

/** Ends one token; false if it was not there. */
export async function deleteToken(q: Queryable, hash: string): Promise<boolean> {
  const { rowCount } = await q.query('DELETE FROM auth_tokens WHERE token_hash = $1', [hash]);
  return rowCount > 0;
}

/** Ends every token of a user; answers how many. */
export async function deleteUserTokens(q: Queryable, userId: string): Promise<number> {
  const { rowCount } = await q.query('DELETE FROM auth_tokens WHERE user_id = $1', [userId]);
  return rowCount;
}
