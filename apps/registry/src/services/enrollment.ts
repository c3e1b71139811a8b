// Enrollment: the single-use tokens a site's tech or pi issues, and a node enrolling with one.
import { randomUUID } from 'node:crypto';
import { AppError } from '@planetlite/core';
import type { EnrollmentToken, EnrollRequest, EnrollResponse } from '@planetlite/api';
import type { Database } from '@planetlite/db';
import { findSite } from '../repositories/sites.js';
import { insertEnrollmentToken, lockEnrollmentToken, markEnrollmentTokenUsed } from '../repositories/enrollment.js';
import { insertNode, lockNodeByHostname, reenrollNode } from '../repositories/nodes.js';
import { portsOutside } from '../repositories/slivers.js';
import { hasSiteRole, type UserPrincipal } from './authz.js';
import { hashSecret, newSecret } from './secrets.js';
import { withChanges, type ChangeDeps } from './changes.js';

export const DEFAULT_PORT_WINDOW = { first: 20000, last: 29999 };

/** Who may hand out tokens for a site's nodes (and see or revoke them). */
export function requireSiteTech(me: UserPrincipal, site: string, what = 'enroll its nodes'): void {
  if (!hasSiteRole(me, site, 'tech', 'pi')) throw new AppError('forbidden', `only a tech or pi of site ${site}, or an admin, may ${what}`);
}

/** A new token for site; the answer is what the route sends (extend it there, e.g. with the CA pin). */
export async function issueEnrollmentToken(db: Database, me: UserPrincipal, site: string, ttlSeconds: number): Promise<EnrollmentToken> {
  requireSiteTech(me, site);
  const found = await findSite(db, site);
  if (!found) throw new AppError('not_found', `site ${site} not found`);
  if (!found.enabled) throw new AppError('forbidden', `site ${site} is disabled`);
  const token = newSecret('enroll');
  const expires = new Date(Date.now() + ttlSeconds * 1000);
  const id = await insertEnrollmentToken(db, { hash: hashSecret(token), site, createdBy: me.id, expires });
  return { token, site, expires_at: expires.toISOString(), id };
}

/** Enrolls a node (or re-enrolls a hostname of the same site, replacing its key). */
export async function enrollNode(deps: ChangeDeps, b: EnrollRequest, portsPerSliver: number): Promise<EnrollResponse> {
  const window = b.port_window ?? DEFAULT_PORT_WINDOW;
  if (window.last - window.first + 1 < portsPerSliver) {
    throw new AppError('invalid_request', `body.port_window must hold at least ${portsPerSliver} ports`);
  }
  const key = newSecret('node');
  const tokenHash = hashSecret(b.token);
  return withChanges(deps, async (q, changes) => {
    const tok = await lockEnrollmentToken(q, tokenHash);
    if (!tok) throw new AppError('token_invalid', 'enrollment token is unknown');
    if (tok.used_at) throw new AppError('token_invalid', 'enrollment token was already used');
    if (new Date(tok.expires_at).getTime() <= Date.now()) throw new AppError('token_invalid', 'enrollment token has expired; ask your site admin for a new one');
    const existing = await lockNodeByHostname(q, b.hostname);
    const enrollment = { address: b.address, capabilities: b.capabilities, resources: b.resources, window, keyHash: hashSecret(key) };
    let nodeId: string;
    if (existing) {
      if (existing.site !== tok.site) throw new AppError('already_exists', `hostname ${b.hostname} is enrolled by another site`);
      nodeId = existing.id;
      if (await portsOutside(q, nodeId, window)) throw new AppError('conflict', 'the new port_window does not hold the ports of slivers already on this node');
      await reenrollNode(q, nodeId, enrollment);
      changes.forget({ node: nodeId });
      changes.touch(nodeId);
    } else {
      nodeId = randomUUID();
      await insertNode(q, nodeId, tok.site, b.hostname, enrollment);
    }
    await markEnrollmentTokenUsed(q, tokenHash, nodeId);
    await changes.record(q, { type: 'node.enrolled', node: nodeId, data: { hostname: b.hostname, site: tok.site, address: b.address, reenrolled: Boolean(existing) } });
    return { node_id: nodeId, node_key: key };
  });
}
