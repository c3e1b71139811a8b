// A node's life in its site's hands: drain (no new slivers), undrain, decommission (slivers torn
// down through the desired state, then the key revoked; the record stays for history), and its keys:
// revocation, and rotation without losing contact.
import { AppError } from '@planetlite/core';
import type { Node, NodeAction, NodeKey, NodePatch } from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import { findNode, markNodeSeen, promoteNextKey, revokeKeys, setAdminState, setNextKey, setNodeLocation } from '../repositories/nodes.js';
import { countSliversOn, deleteSliver, lockSliversOfNode, markNodeSliversDeleting } from '../repositories/slivers.js';
import { dropSliceIfEmpty } from '../repositories/slices.js';
import { hasSiteRole, type UserPrincipal } from './authz.js';
import { withChanges, type ChangeDeps, type Changes } from './changes.js';
import { hashSecret, newSecret } from './secrets.js';

/** A node that calls in is online; the first call after silence records node.online. */
export async function markSeen(q: Queryable, changes: Changes, nodeId: string): Promise<void> {
  if ((await markNodeSeen(q, nodeId)) === 'offline') await changes.record(q, { type: 'node.online', node: nodeId });
}

/** How long a node's old key still works after its new one was first used (requests under way). */
export const OLD_KEY_GRACE_SECONDS = 120;

/** A site's tech or pi, or an admin, runs the site's nodes. */
function requireNodeAdmin(me: UserPrincipal, node: Node, what: string): void {
  if (!hasSiteRole(me, node.site, 'tech', 'pi')) throw new AppError('forbidden', `only a tech or pi of site ${node.site}, or an admin, may ${what} node ${node.hostname}`);
}

async function lockNode(q: Queryable, id: string): Promise<Node> {
  const node = await findNode(q, id, true);
  if (!node) throw new AppError('not_found', `node ${id} not found`);
  return node;
}

const label = (n: Node) => `${n.hostname} (${n.id})`;

/** Refuses new slivers on a node that is not active. */
export function requireNodeTakesSlivers(node: Node): void {
  if (node.admin_state === 'draining') {
    throw new AppError('node_draining', `node ${label(node)} is draining: its site takes it out of service, so it gets no new slivers; pick another node (planetlite node ls)`);
  }
  if (node.admin_state !== 'active') throw new AppError('node_decommissioned', `node ${label(node)} is ${node.admin_state}: it gets no new slivers`);
}

/**
 * drain, undrain or decommission; answers the node as it is now. Repeating an action changes
 * nothing. force (decommission of an offline node only) forgets its slivers without waiting for it.
 */
export async function actOnNode(deps: ChangeDeps, me: UserPrincipal, id: string, action: NodeAction['action'], force = false): Promise<Node> {
  return withChanges(deps, async (q, changes) => {
    const node = await lockNode(q, id);
    requireNodeAdmin(me, node, action);
    const by = me.email;
    if (force && action !== 'decommission') throw new AppError('invalid_request', 'body.force applies to decommission only');
    if (force && node.state === 'online') {
      throw new AppError('conflict', `node ${label(node)} is online: let it tear its slivers down (decommission without force); force is for a node that is gone`);
    }
    if (node.admin_state === 'decommissioned' || (node.admin_state === 'decommissioning' && action !== 'decommission')) {
      if (action === 'decommission') return node;
      throw new AppError('node_decommissioned', `node ${label(node)} is ${node.admin_state}; enroll it again to bring it back`);
    }
    if (action === 'drain') {
      if (node.admin_state === 'draining') return node;
      await changes.record(q, { type: 'node.drained', node: id, data: { hostname: node.hostname, by } });
      return setAdminState(q, id, 'draining');
    }
    if (action === 'undrain') {
      if (node.admin_state === 'active') return node;
      await changes.record(q, { type: 'node.undrained', node: id, data: { hostname: node.hostname, by } });
      return setAdminState(q, id, 'active');
    }
    if (node.admin_state === 'decommissioning' && !force) return node;
    if (node.admin_state !== 'decommissioning') {
      await setAdminState(q, id, 'decommissioning');
      const going = await markNodeSliversDeleting(q, id);
      for (const s of going) {
        await changes.record(q, { type: 'sliver.state', slice: s.slice, node: id, sliver: s.id, data: { state: 'deleting', reason: 'node decommissioned', by } });
      }
      changes.touch(id);
      await changes.record(q, { type: 'node.decommissioning', node: id, data: { hostname: node.hostname, slivers: going.length, by, force } });
    }
    if (force) await forgetSlivers(q, changes, id, by);
    await finishDecommission(q, changes, id);
    return (await findNode(q, id))!;
  });
}

/** The slivers of a node that is gone, dropped without its confirmation (their slices may go with them). */
async function forgetSlivers(q: Queryable, changes: Changes, id: string, by: string): Promise<void> {
  for (const s of await lockSliversOfNode(q, id)) {
    await deleteSliver(q, s.id);
    await changes.record(q, { type: 'sliver.state', slice: s.slice, node: id, sliver: s.id, data: { state: 'deleted', reason: 'node decommissioned by force', by } });
    await dropSliceIfEmpty(q, s.slice);
  }
}

/**
 * A decommissioning node with no sliver left (its agent confirmed them gone, or it had none) is
 * decommissioned: its keys are revoked, its record stays.
 */
export async function finishDecommission(q: Queryable, changes: Changes, id: string): Promise<void> {
  const node = await findNode(q, id);
  if (node?.admin_state !== 'decommissioning' || (await countSliversOn(q, id)) > 0) return;
  await setAdminState(q, id, 'decommissioned');
  await revokeKeys(q, id);
  changes.forget({ node: id });
  changes.touch(id);
  await changes.record(q, { type: 'node.decommissioned', node: id, data: { hostname: node.hostname } });
}

/**
 * Changes what a node's site says about it (its location; null clears it): the site's tech or pi,
 * or an admin. Answers the node as it is now; a change is an event, so that open pages redraw.
 */
export async function patchNode(deps: ChangeDeps, me: UserPrincipal, id: string, patch: NodePatch): Promise<Node> {
  return withChanges(deps, async (q, changes) => {
    const node = await lockNode(q, id);
    requireNodeAdmin(me, node, 'set the location of');
    if (patch.location === undefined || JSON.stringify(node.location) === JSON.stringify(patch.location)) return (await findNode(q, id))!;
    await setNodeLocation(q, id, patch.location);
    await changes.record(q, { type: 'node.located', node: id, data: { hostname: node.hostname, location: patch.location, by: me.email } });
    return (await findNode(q, id))!;
  });
}

/** Revokes a node's key at once (tech, pi, admin); the node must enroll again with a new token. */
export async function revokeNodeKey(deps: ChangeDeps, me: UserPrincipal, id: string): Promise<Node> {
  return withChanges(deps, async (q, changes) => {
    const node = await lockNode(q, id);
    requireNodeAdmin(me, node, 'revoke the key of');
    const revoked = await revokeKeys(q, id);
    if (!revoked) return node;
    changes.forget({ node: id });
    // Wakes the node's long-poll, which then answers 401 node_key_revoked.
    changes.touch(id);
    await changes.record(q, { type: 'node.key_revoked', node: id, data: { hostname: node.hostname, by: me.email } });
    return revoked;
  });
}

/** A new key for the node, asked for with its current key. */
export async function rotateNodeKey(deps: ChangeDeps, id: string): Promise<NodeKey> {
  const key = newSecret('node');
  await withChanges(deps, async (q, changes) => {
    if (!(await setNextKey(q, id, hashSecret(key)))) throw new AppError('node_key_revoked', `node ${id}'s key was revoked; enroll it again`);
    await changes.record(q, { type: 'node.key_issued', node: id, data: { note: 'the old key works until the new one is first used' } });
  });
  return { node_id: id, node_key: key };
}

/** The first request with a node's new key makes it the key. */
export async function promoteNodeKey(deps: ChangeDeps, id: string, hash: string): Promise<void> {
  await withChanges(deps, async (q, changes) => {
    if (await promoteNextKey(q, id, hash, OLD_KEY_GRACE_SECONDS)) {
      // The old key is good only for the grace period now.
      changes.forget({ node: id });
      await changes.record(q, { type: 'node.key_rotated', node: id, data: { old_key_valid_seconds: OLD_KEY_GRACE_SECONDS } });
    }
  });
}
