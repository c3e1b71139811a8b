// What a node's agent tells the registry: that it is alive, what it can do, and what its slivers do.
import type { Queryable } from '@planetlite/db';
import { SLIVER_ERROR_MAX_CHARS, type NodeCapabilities, type ObservedState, type SliverUsage } from '@planetlite/api';
import { markNodeSeen, nodeCapabilities, setNodeCapabilities, setNodeFrontDoor, setNodeImages } from '../repositories/nodes.js';
import { parsePublicKey } from './sshkeys.js';
import { deleteSliver, lockSliversOfNode, refreshSlivers, type SliverRefresh } from '../repositories/slivers.js';
import { dropSliceIfEmpty } from '../repositories/slices.js';
import { insertUsageSamples } from '../repositories/usage.js';
import type { Changes } from './changes.js';
import { finishDecommission } from './node-lifecycle.js';

/** The first max UTF-16 units of s, never ending in half of a surrogate pair. */
export function cutText(s: string, max: number): string {
  if (s.length <= max) return s;
  const code = s.charCodeAt(max - 1);
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

/** A node that calls in is online; the first call after silence records node.online. */
export async function markSeen(q: Queryable, changes: Changes, nodeId: string): Promise<void> {
  if ((await markNodeSeen(q, nodeId)) === 'offline') await changes.record(q, { type: 'node.online', node: nodeId });
}

/**
 * Capabilities the agent learnt after enrollment (its qemu probe runs in the background) replace
 * the enrolled ones. Written and recorded as node.capabilities only when they differ, since every
 * report carries them.
 */
async function updateCapabilities(q: Queryable, changes: Changes, nodeId: string, caps: NodeCapabilities): Promise<void> {
  const before = await nodeCapabilities(q, nodeId);
  if (before && before.lxc === caps.lxc && before.kvm === caps.kvm && before.kvm_accel === caps.kvm_accel && before.arch === caps.arch) return;
  const after: NodeCapabilities = { lxc: caps.lxc, kvm: caps.kvm, kvm_accel: caps.kvm_accel, ...(caps.arch ? { arch: caps.arch } : {}) };
  await setNodeCapabilities(q, nodeId, after);
  await changes.record(q, { type: 'node.capabilities', node: nodeId, data: { from: before, to: after } });
}

/** The front door's host key as users will pin it; node.front_door records a change of key or port. */
async function updateFrontDoor(q: Queryable, changes: Changes, nodeId: string, door: NonNullable<ObservedState['front_door']> | null): Promise<void> {
  // A key ssh2 cannot read is published as no front door rather than failing the whole report.
  const parsed = door && (() => {
    try {
      return parsePublicKey(door.host_key);
    } catch {
      return null;
    }
  })();
  const value = door && parsed ? { port: door.port, host_key: parsed.key, fingerprint: parsed.fingerprint } : null;
  if (await setNodeFrontDoor(q, nodeId, value)) await changes.record(q, { type: 'node.front_door', node: nodeId, data: { port: value?.port ?? null, fingerprint: value?.fingerprint ?? null } });
}

/**
 * Applies one observed-state report. A deleting sliver absent from the report (or reported
 * deleted) is gone; usageSampleSeconds paces the accounting history.
 */
export async function applyReport(
  q: Queryable,
  changes: Changes,
  nodeId: string,
  body: ObservedState,
  usageSampleSeconds: number,
): Promise<{ updated: number; removed: number }> {
  await markSeen(q, changes, nodeId);
  if (body.capabilities) await updateCapabilities(q, changes, nodeId, body.capabilities);
  if (body.images) await setNodeImages(q, nodeId, body.images);
  if (body.front_door !== undefined) await updateFrontDoor(q, changes, nodeId, body.front_door);
  const rows = await lockSliversOfNode(q, nodeId);
  const reported = new Map(body.slivers.map((s) => [s.id, s]));
  let updated = 0;
  let removed = 0;
  const refresh: SliverRefresh[] = [];
  const samples: Array<{ id: string } & SliverUsage> = [];
  for (const row of rows) {
    const { id, slice } = row;
    const obs = reported.get(id);
    const deleting = row.desired === 'deleted';
    if (deleting && (!obs || obs.state === 'deleted')) {
      await deleteSliver(q, id);
      await changes.record(q, { type: 'sliver.state', slice, node: nodeId, sliver: id, data: { state: 'deleted' } });
      await dropSliceIfEmpty(q, slice);
      removed++;
      continue;
    }
    if (!obs || obs.state === 'deleted') continue;
    // A sliver being deleted stays 'deleting' until it is gone, unless its teardown failed.
    const state = deleting && obs.state !== 'failed' ? 'deleting' : obs.state;
    const error = obs.error == null ? null : cutText(obs.error, SLIVER_ERROR_MAX_CHARS);
    const address = obs.address === undefined ? row.address : obs.address;
    const usage = {
      cpu_seconds: obs.cpu_seconds,
      memory_bytes: obs.memory_bytes,
      disk_bytes: obs.disk_bytes,
      net_rx_bytes: obs.net_rx_bytes,
      net_tx_bytes: obs.net_tx_bytes,
    };
    const hasUsage = Object.values(usage).some((v) => v !== undefined);
    refresh.push({ id, state, error, address, usage: hasUsage ? usage : null, watchdog_hold: obs.watchdog_hold ?? null });
    if (hasUsage) samples.push({ id, ...usage });
    if (state !== row.state || error !== row.error) {
      updated++;
      await changes.record(q, { type: 'sliver.state', slice, node: nodeId, sliver: id, data: { state, error, from: row.state } });
    }
  }
  await refreshSlivers(q, refresh);
  await insertUsageSamples(q, samples, usageSampleSeconds * 0.9);
  // The last sliver of a decommissioning node confirmed gone: the node's key goes with it.
  if (removed) await finishDecommission(q, changes, nodeId);
  return { updated, removed };
}
