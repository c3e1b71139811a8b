// What a node's agent tells the registry: that it is alive, what it can do, and what its slivers do.
import type { Queryable } from '@planetlite/db';
import { SLIVER_ERROR_MAX_CHARS, type FrontDoor, type NodeCapabilities, type ObservedState, type SliverUsage } from '@planetlite/api';
import { nodeCapabilities, setNodeCapabilities, setNodeFrontDoor, setNodeImages, setNodeSpares } from '../repositories/nodes.js';
import { parsePublicKey } from './sshkeys.js';
import { deleteSliver, lockSliversOfNode, refreshSlivers, type SliverRefresh } from '../repositories/slivers.js';
import { dropSliceIfEmpty } from '../repositories/slices.js';
import { insertUsageSamples } from '../repositories/usage.js';
import { applyPlainReport, type ReportedSliver } from '../repositories/reports.js';
import type { NewEvent } from '../repositories/events.js';
import { Changes, withChanges, type ChangeDeps } from './changes.js';
import { finishDecommission, markSeen } from './node-lifecycle.js';
import { reportDigests, type ReportMemo } from './report-memo.js';

/** The first max UTF-16 units of s, never ending in half of a surrogate pair. */
export function cutText(s: string, max: number): string {
  if (s.length <= max) return s;
  const code = s.charCodeAt(max - 1);
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

/** Capabilities as the node's row keeps them. */
const storedCapabilities = (caps: NodeCapabilities): NodeCapabilities =>
  ({ lxc: caps.lxc, kvm: caps.kvm, kvm_accel: caps.kvm_accel, ...(caps.arch ? { arch: caps.arch } : {}) });

/** The front door as the node's row keeps it. A key ssh2 cannot read is kept as no front door rather than failing the whole report. */
function storedFrontDoor(door: NonNullable<ObservedState['front_door']> | null): FrontDoor | null {
  const parsed = door && (() => {
    try {
      return parsePublicKey(door.host_key);
    } catch {
      return null;
    }
  })();
  return door && parsed ? { port: door.port, host_key: parsed.key, fingerprint: parsed.fingerprint } : null;
}

/**
 * Capabilities the agent learnt after enrollment (its qemu probe runs in the background) replace
 * the enrolled ones. Written and recorded as node.capabilities only when they differ, since every
 * report carries them.
 */
async function updateCapabilities(q: Queryable, changes: Changes, nodeId: string, caps: NodeCapabilities): Promise<void> {
  const before = await nodeCapabilities(q, nodeId);
  if (before && before.lxc === caps.lxc && before.kvm === caps.kvm && before.kvm_accel === caps.kvm_accel && before.arch === caps.arch) return;
  const after = storedCapabilities(caps);
  await setNodeCapabilities(q, nodeId, after);
  await changes.record(q, { type: 'node.capabilities', node: nodeId, data: { from: before, to: after } });
}

/** The front door's host key as users will pin it; node.front_door records a change of key or port. */
async function updateFrontDoor(q: Queryable, changes: Changes, nodeId: string, door: NonNullable<ObservedState['front_door']> | null): Promise<void> {
  const value = storedFrontDoor(door);
  if (await setNodeFrontDoor(q, nodeId, value)) await changes.record(q, { type: 'node.front_door', node: nodeId, data: { port: value?.port ?? null, fingerprint: value?.fingerprint ?? null } });
}

/**
 * Applies one observed-state report. A deleting sliver absent from a whole report (or reported
 * deleted) is gone; a partial one touches only the slivers it lists. usageSampleSeconds paces the
 * accounting history.
 */
export async function applyReport(
  q: Queryable,
  changes: Changes,
  nodeId: string,
  body: ObservedState,
  usageSampleSeconds: number,
): Promise<WrittenReport> {
  await markSeen(q, changes, nodeId);
  if (body.capabilities) await updateCapabilities(q, changes, nodeId, body.capabilities);
  if (body.images) await setNodeImages(q, nodeId, body.images);
  if (body.front_door !== undefined) await updateFrontDoor(q, changes, nodeId, body.front_door);
  await setNodeSpares(q, nodeId, body.spares ?? []);
  const reported = new Map(body.slivers.map((s) => [s.id, s]));
  const rows = await lockSliversOfNode(q, nodeId, body.partial ? [...reported.keys()] : undefined);
  let updated = 0;
  let removed = 0;
  const refresh: SliverRefresh[] = [];
  const samples: Array<{ id: string; usage: SliverUsage }> = [];
  // The slivers' events go in one statement at the end: a first report after a restart moves every sliver.
  const events: NewEvent[] = [];
  for (const row of rows) {
    const { id, slice } = row;
    const obs = reported.get(id);
    const deleting = row.desired === 'deleted';
    if (deleting && (!obs || obs.state === 'deleted')) {
      await deleteSliver(q, id);
      events.push({ type: 'sliver.state', slice, node: nodeId, sliver: id, data: { state: 'deleted' } });
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
    if (hasUsage) samples.push({ id, usage });
    if (state !== row.state || error !== row.error) {
      updated++;
      events.push({ type: 'sliver.state', slice, node: nodeId, sliver: id, data: { state, error, from: row.state } });
    }
  }
  await changes.recordMany(q, events);
  await refreshSlivers(q, refresh);
  const sampled = await insertUsageSamples(q, samples, usageSampleSeconds * 0.9);
  // The last sliver of a decommissioning node confirmed gone: the node's key goes with it.
  if (removed) await finishDecommission(q, changes, nodeId);
  return { updated, removed, sampled };
}

/** What writing a report did: slivers whose state moved, slivers gone, usage samples recorded. */
export interface WrittenReport {
  updated: number;
  removed: number;
  sampled: number;
}

/**
 * How stale a calling node's last_seen may get before a poll or report rewrites it: a fifth of the
 * offline threshold (30 s by default), so the row is written at most about once per report period
 * and the offline sweep still sees a talking node as recent.
 */
export const seenRefreshSecondsOf = (nodeOfflineAfterSeconds: number): number => Math.max(1, Math.floor(nodeOfflineAfterSeconds / 5));

/** What a report needs beyond the database and fan-out. */
export interface ReportOptions {
  usageSampleSeconds: number;
  /** A node's last_seen is rewritten only once it is this old. */
  seenRefreshSeconds: number;
  /** Takes reports that say nothing new without a statement of their own; absent: every report is written. */
  memo?: ReportMemo | undefined;
  /** Runs each write of a report in its turn (a report taken by the memo costs none); absent: at once. */
  turn?: <T>(write: () => Promise<T>) => Promise<T>;
  /** True once the node has hung up: a report still waiting for its turn then is not written. */
  gone?: () => boolean;
}

/**
 * A report dropped at its turn because its node had hung up. An agent gives up on a report after
 * 30 s and sends a newer one later; in a fleet's reconnect storm thousands wait for their turn,
 * and writing the ones nobody waits for any more only delays those of nodes still waiting.
 */
export class ReportDropped extends Error {
  constructor() {
    super('the node hung up before its report\'s turn; the report was not written');
  }
}

/**
 * Applies one observed-state report. Nearly every report (node online, same capabilities and front
 * door, no sliver gone) takes one statement that writes only what moved, sliver events included;
 * the others are applied in full, in a transaction.
 */
export async function acceptReport(deps: ChangeDeps, nodeId: string, body: ObservedState, opts: ReportOptions): Promise<{ updated: number; removed: number }> {
  const { memo } = opts;
  if (!memo) return counts(await writeReport(deps, nodeId, body, opts));
  // A partial report (what changed) is always written; what is remembered of the node's last
  // whole report no longer says what the database holds.
  if (body.partial) {
    const ticket = memo.begin(nodeId);
    try {
      const out = await writeReport(deps, nodeId, body, opts);
      memo.wrotePartial(ticket, body);
      return counts(out);
    } catch (err) {
      if (err instanceof ReportDropped) memo.abandon(ticket);
      else memo.wrotePartial(ticket, body);
      throw err;
    }
  }
  const digests = reportDigests(body);
  if (memo.absorb(nodeId, body, digests)) return { updated: 0, removed: 0 };
  const ticket = memo.begin(nodeId);
  try {
    const { updated, removed, sampled } = await writeReport(deps, nodeId, body, opts);
    memo.remember(ticket, body, digests, sampled > 0);
    return { updated, removed };
  } catch (err) {
    memo.abandon(ticket);
    throw err;
  }
}

const counts = ({ updated, removed }: WrittenReport) => ({ updated, removed });

function writeReport(deps: ChangeDeps, nodeId: string, body: ObservedState, opts: ReportOptions): Promise<WrittenReport> {
  if (!opts.turn) return writeReportNow(deps, nodeId, body, opts);
  return opts.turn(() => (opts.gone?.() ? Promise.reject(new ReportDropped()) : writeReportNow(deps, nodeId, body, opts)));
}

async function writeReportNow(deps: ChangeDeps, nodeId: string, body: ObservedState, opts: ReportOptions): Promise<WrittenReport> {
  const reported = new Map(body.slivers.map((s) => [s.id, s]));
  const slivers: ReportedSliver[] = [...reported.values()].map((obs) => {
    const usage = {
      cpu_seconds: obs.cpu_seconds,
      memory_bytes: obs.memory_bytes,
      disk_bytes: obs.disk_bytes,
      net_rx_bytes: obs.net_rx_bytes,
      net_tx_bytes: obs.net_tx_bytes,
    };
    return {
      id: obs.id,
      state: obs.state,
      error: obs.error == null ? null : cutText(obs.error, SLIVER_ERROR_MAX_CHARS),
      address: obs.address ?? null,
      keep_address: obs.address === undefined,
      usage: Object.values(usage).some((v) => v !== undefined) ? usage : null,
      watchdog_hold: obs.watchdog_hold ?? null,
    };
  });
  const plain = await applyPlainReport(deps.db, nodeId, {
    slivers,
    capabilities: body.capabilities ? storedCapabilities(body.capabilities) : null,
    frontDoor: body.front_door === undefined ? undefined : storedFrontDoor(body.front_door),
    images: body.images ?? null,
    spares: body.spares ?? [],
    seenRefreshSeconds: opts.seenRefreshSeconds,
    sampleSeconds: opts.usageSampleSeconds * 0.9,
    partial: body.partial === true,
  });
  if (plain) {
    const changes = new Changes();
    changes.recorded(...plain.events);
    await changes.publish(deps);
    return { updated: plain.events.length, removed: 0, sampled: plain.sampled };
  }
  return withChanges(deps, (q, changes) => applyReport(q, changes, nodeId, body, opts.usageSampleSeconds));
}
