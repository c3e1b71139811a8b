// Who may do what: the rules the auth plugin's guards and the services both apply.
import type { Queryable } from '@planetlite/db';
import { AppError } from '@planetlite/core';
import type { Role, User } from '@planetlite/api';
import { isMember, type SliceRecord } from '../repositories/slices.js';

export interface UserPrincipal {
  kind: 'user';
  id: string;
  email: string;
  name: string;
  site: string | null;
  roles: Role[];
  admin: boolean;
  /** The hash of the token this request came with (logout ends it). */
  tokenHash: string;
}
export interface NodePrincipal {
  kind: 'node';
  id: string;
  site: string;
}
export type Principal = UserPrincipal | NodePrincipal;

/** The caller a user token stands for: an admin is whoever holds the admin role. */
export function userPrincipal(u: { id: string; email: string; name: string; site: string | null; roles: Role[] }, tokenHash: string): UserPrincipal {
  return { kind: 'user', id: u.id, email: u.email, name: u.name, site: u.site, roles: u.roles, admin: u.roles.includes('admin'), tokenHash };
}

/** Admin, or one of roles at site. */
export function hasSiteRole(u: UserPrincipal, site: string, ...roles: Role[]): boolean {
  return u.admin || (u.site === site && roles.some((r) => u.roles.includes(r)));
}

/** Admin, the user themself, or a pi/tech of the user's site may see them. */
export function canSeeUser(me: UserPrincipal, user: Pick<User, 'id' | 'site'>): boolean {
  return me.admin || me.id === user.id || (user.site != null && hasSiteRole(me, user.site, 'pi', 'tech'));
}

/** The site whose slices a user oversees as its pi, if any. */
export const piSiteOf = (me: UserPrincipal): string | null => (me.roles.includes('pi') ? me.site : null);

export type SliceRole = 'admin' | 'pi' | 'member' | null;

/** How the caller relates to a slice of site, knowing whether they are one of its members. */
export function roleOf(me: UserPrincipal, site: string, member: boolean): SliceRole {
  if (me.admin) return 'admin';
  if (hasSiteRole(me, site, 'pi')) return 'pi';
  return member ? 'member' : null;
}

/** How the caller relates to a slice: admin, pi of its site, member, or nothing. */
export async function sliceRole(q: Queryable, me: UserPrincipal, slice: Pick<SliceRecord, 'name' | 'site'>): Promise<SliceRole> {
  if (me.admin || hasSiteRole(me, slice.site, 'pi')) return roleOf(me, slice.site, false);
  return roleOf(me, slice.site, await isMember(q, slice.name, me.id));
}

/** The role, when it is one of those allowed; else 403 naming what was refused. */
export function allowedRole(role: SliceRole, allowed: Array<Exclude<SliceRole, null>>, slice: string, what: string): Exclude<SliceRole, null> {
  if (!role || !allowed.includes(role)) refuse(slice, what);
  return role;
}

/** The 403 for what the caller may not do to a slice. */
export function refuse(slice: string, what: string): never {
  throw new AppError('forbidden', `you may not ${what} slice ${slice}`);
}

export async function requireSliceRole(
  q: Queryable,
  me: UserPrincipal,
  slice: Pick<SliceRecord, 'name' | 'site'>,
  allowed: Array<Exclude<SliceRole, null>>,
  what: string,
): Promise<SliceRole> {
  return allowedRole(await sliceRole(q, me, slice), allowed, slice.name, what);
}
