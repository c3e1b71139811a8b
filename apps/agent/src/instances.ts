// A node's slivers are LXC containers or qemu VMs (CoreLab: both, side by side): one instance
// driver per sliver kind. Each driver says itself whether it is ready (InstanceDriver.status);
// the VM driver's check (tools, node kernel, the accelerator probe boot) takes seconds, so it runs
// in the background: containers do not wait for it, and VM slivers stay provisioning until it is done.
import type { NodeCapabilities } from '@planetlite/api';
import { errorFields } from '@planetlite/host';
import type { Logger } from '@planetlite/core';
import type { InstanceDriver, InstanceState } from '@planetlite/instance';
import type { Readiness, SliverKind } from './planner.js';

export type { SliverKind } from './planner.js';
export const SLIVER_KINDS: readonly SliverKind[] = ['lxc', 'kvm'];

/** The instance driver of each sliver kind this node runs. */
export type InstanceDrivers = Partial<Record<SliverKind, InstanceDriver>>;

/** Why a kind has no driver on this node (run --vm off, or the driver could not be made). */
export type KindsOff = Partial<Record<SliverKind, string>>;

/** Whether slivers of this kind can be built now, from the driver's own status. */
export function readiness(drivers: InstanceDrivers, off: KindsOff, kind: SliverKind): Readiness {
  const driver = drivers[kind];
  const status = driver?.status ?? { state: 'failed' as const, why: off[kind] ?? `this node runs no ${kind} slivers` };
  switch (status.state) {
    case 'ready':
      return { state: 'ready' };
    case 'unchecked':
    case 'checking':
      return { state: 'checking', why: kind === 'kvm' ? 'waiting for the node to check that it can run VMs (accelerator probe)' : `waiting for the node to check its ${kind} driver` };
    case 'failed':
      return { state: 'off', why: `this node cannot run ${kind} slivers: ${status.why}` };
  }
}

/** What the node reports it can run: what its drivers' checks found. */
export function nodeCapabilities(drivers: InstanceDrivers, arch: string): NodeCapabilities {
  const ready = (kind: SliverKind) => drivers[kind]?.status.state === 'ready';
  const kvm = drivers.kvm?.status;
  return { lxc: ready('lxc'), kvm: ready('kvm'), kvm_accel: kvm?.state === 'ready' ? (kvm.accel ?? 'tcg') : null, arch };
}

/** Instances of every ready driver, by id, with the kind of the driver that listed each: one
 * cheap probe per driver (a pass and a report read all of them). */
export async function instanceStates(drivers: InstanceDrivers): Promise<Map<string, { kind: SliverKind; state: InstanceState }>> {
  const all = new Map<string, { kind: SliverKind; state: InstanceState }>();
  for (const kind of SLIVER_KINDS) {
    const d = drivers[kind];
    if (d?.status.state !== 'ready') continue;
    for (const [id, state] of await d.states()) all.set(id, { kind, state });
  }
  return all;
}

/** The instances every ready driver lists, by id, with their kind and no state (a directory read
 * per driver, no cgroup read): what a pass for a new document needs to find leftovers. */
export async function instanceList(drivers: InstanceDrivers): Promise<Map<string, { kind: SliverKind; state: null }>> {
  const all = new Map<string, { kind: SliverKind; state: null }>();
  for (const kind of SLIVER_KINDS) {
    const d = drivers[kind];
    if (d?.status.state !== 'ready') continue;
    for (const id of await d.list()) all.set(id, { kind, state: null });
  }
  return all;
}

/** Runs the check of every driver not checked yet, in the background; onDone runs after each. */
export function checkInBackground(drivers: InstanceDrivers, log: Logger, onDone: () => void): Promise<void> {
  const checks = SLIVER_KINDS.map((kind) => {
    const d = drivers[kind];
    if (!d || d.status.state !== 'unchecked') return Promise.resolve();
    return d.check().then(
      () => {
        const st = d.status;
        log.info({ kind, ...(st.state === 'ready' && st.accel ? { accel: st.accel } : {}) }, 'slivers of this kind can run here');
      },
      (err: unknown) => log.warn({ kind, ...errorFields(err) }, 'slivers of this kind cannot run here'),
    ).then(onDone);
  });
  return Promise.all(checks).then(() => undefined);
}
