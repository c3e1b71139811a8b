// Slice and sliver rules shared by routes and the scheduled sweeps.
import type { Queryable } from '@planetlite/db';
import { AppError } from '@planetlite/core';
import type * as S from '@planetlite/api';
import type { UserPrincipal } from '../plugins/auth.js';
import { hasSiteRole } from '../plugins/auth.js';
import { toSlice, type Row } from './mappers.js';
import type { Changes } from './changes.js';

export const siteOfSlice = (name: string): string => name.slice(0, name.indexOf('_'));

export async function loadSlice(q: Queryable, name: string, lock = false): Promise<Row> {
  const { rows } = await q.query(`SELECT * FROM slices WHERE name = $1${lock ? ' FOR NO KEY UPDATE' : ''}`, [name]);
  if (!rows[0]) throw new AppError('not_found', `slice ${name} not found`);
  return rows[0];
}

export async function sliceMembers(q: Queryable, name: string): Promise<S.SliceMember[]> {
  const { rows } = await q.query<S.SliceMember>(
    'SELECT u.id, u.email, u.name FROM slice_members m JOIN users u ON u.id = m.user_id WHERE m.slice = $1 ORDER BY u.email',
    [name],
  );
  return rows;
}

export async function sliceView(q: Queryable, row: Row): Promise<S.Slice> {
  return toSlice(row, await sliceMembers(q, row.name as string));
}

export async function isMember(q: Queryable, slice: string, userId: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM slice_members WHERE slice = $1 AND user_id = $2', [slice, userId]);
  return rows.length > 0;
}

export type SliceRole = 'admin' | 'pi' | 'member' | null;

/** How the caller relates to a slice: admin, pi of its site, member, or nothing. */
export async function sliceRole(q: Queryable, me: UserPrincipal, slice: Row): Promise<SliceRole> {
  if (me.admin) return 'admin';
  if (hasSiteRole(me, slice.site as string, 'pi')) return 'pi';
  if (await isMember(q, slice.name as string, me.id)) return 'member';
  return null;
}

export async function requireSliceRole(q: Queryable, me: UserPrincipal, slice: Row, allowed: Array<Exclude<SliceRole, null>>, what: string): Promise<SliceRole> {
  const role = await sliceRole(q, me, slice);
  if (!role || !allowed.includes(role)) throw new AppError('forbidden', `you may not ${what} slice ${slice.name as string}`);
  return role;
}

/**
 * Marks a slice deleting and every sliver of it for teardown. A slice without slivers goes at once;
 * otherwise the last sliver the agents confirm gone takes the slice with it.
 */
export async function tearDownSlice(q: Queryable, changes: Changes, name: string, reason: 'deleted' | 'expired'): Promise<void> {
  await q.query("UPDATE slices SET state = 'deleting' WHERE name = $1", [name]);
  const { rows } = await q.query<{ id: string; node_id: string }>(
    "UPDATE slivers SET desired = 'deleted', state = 'deleting', updated_at = now() WHERE slice = $1 RETURNING id, node_id",
    [name],
  );
  for (const s of rows) {
    changes.touch(s.node_id);
    await changes.record(q, { type: 'sliver.state', slice: name, node: s.node_id, sliver: s.id, data: { state: 'deleting', reason: `slice ${reason}` } });
  }
  await changes.record(q, { type: reason === 'expired' ? 'slice.expired' : 'slice.deleted', slice: name, data: { slivers: rows.length } });
  await dropSliceIfEmpty(q, name);
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

/**
 * First free run of `count` ports in the node's window. Callers hold the node row lock
 * (SELECT … FOR NO KEY UPDATE), so concurrent allocations on one node are serialised.
 */
export async function allocatePorts(q: Queryable, nodeId: string, window: { first: number; last: number }, count: number): Promise<{ first: number; last: number }> {
  const { rows } = await q.query<{ port_first: number; port_last: number }>(
    'SELECT port_first, port_last FROM slivers WHERE node_id = $1 ORDER BY port_first',
    [nodeId],
  );
  let next = window.first;
  for (const r of rows) {
    if (r.port_first - next >= count) break;
    next = Math.max(next, r.port_last + 1);
  }
  if (next + count - 1 > window.last) {
    throw new AppError('port_window_exhausted', `node ${nodeId} has no ${count} free ports left in its window ${window.first}-${window.last}`);
  }
  return { first: next, last: next + count - 1 };
}

/**
 * Refuses a slice of this kind on a published image that does not serve it (its manifest's
 * kinds). An image the registry has not published may still be on nodes (`planetlite-agent
 * image import`): nothing to check then. Returns the image's architecture, when published.
 */
export async function requireImageServes(q: Queryable, image: string, kind: S.Slice['kind']): Promise<{ arch: string } | null> {
  const { rows } = await q.query<{ kinds: string[]; arch: string | null }>('SELECT kinds, arch FROM images WHERE name = $1', [image]);
  const img = rows[0];
  if (!img) return null;
  if (!img.kinds.includes(kind)) {
    throw new AppError('image_incompatible', `image ${image} serves ${img.kinds.join(' and ')} slivers, not ${kind}; choose an image whose kinds include ${kind} (planetlite image ls)`);
  }
  return { arch: img.arch ?? 'x86_64' };
}
