// Builds and checks this node's drivers from its settings: storage, one instance driver per
// sliver kind, network.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '@planetlite/core';
import { instanceDrivers, isInstanceError } from '@planetlite/instance';
import { networkDrivers, type NetworkDriver } from '@planetlite/network';
import { drivers as storageDrivers, type StorageDriver } from '@planetlite/storage';
import type { InstanceDrivers, KindsOff } from './instances.js';
import type { AgentSettings } from './settings.js';
import { withStateLock } from './state.js';

export interface Drivers {
  storage: StorageDriver;
  /** The instance driver of each sliver kind this node runs. */
  instances: InstanceDrivers;
  network: NetworkDriver;
  /** Why a kind has no driver here. */
  off?: KindsOff;
}

/** The node's btrfs pool, opened (created, formatted and mounted on first use) under the state
 * dir's lock, so that two agent processes never do that at once. */
export async function openStorage(settings: AgentSettings, stateDir: string): Promise<StorageDriver> {
  const storage = storageDrivers.btrfs!({ pool: settings.pool, size: settings.pool_size, mountpoint: settings.pool_mount, layers: settings.sliver_roots === 'layered' });
  await withStateLock(stateDir, 'opening the storage pool', () => storage.open());
  return storage;
}

/**
 * The node's drivers. LXC and the network are checked before this returns; the VM driver (unless
 * settings.vm is 'off') is left unchecked, for the agent to check in the background
 * (instances.ts: checkInBackground).
 */
export async function openDrivers(settings: AgentSettings, publicAddress: string, stateDir: string, probeIdmapBase?: number, log?: Logger): Promise<Drivers> {
  const storage = await openStorage(settings, stateDir);
  mkdirSync(settings.lxc_path, { recursive: true, mode: 0o711 });
  const where = { lxcPath: settings.lxc_path, rootfsDir: settings.pool_mount, ...(settings.netns ? { netns: settings.netns } : {}) };
  const instances: InstanceDrivers = { lxc: instanceDrivers.lxc!({ ...where, ...(probeIdmapBase !== undefined ? { probeIdmapBase } : {}) }) };
  const off: KindsOff = {};
  if (settings.vm === 'off') off.kvm = 'VM slivers are off on this node (planetlite-agent run --vm off)';
  else {
    try {
      instances.kvm = instanceDrivers.qemu!({ ...where, vmPath: join(stateDir, 'vm') });
    } catch (err) {
      off.kvm = err instanceof Error ? err.message : String(err);
    }
  }
  const network = networkDrivers.nftables!({
    publicAddress,
    sliverSubnet: settings.sliver_subnet,
    ...(settings.netns ? { netns: settings.netns } : {}),
  });
  try {
    await instances.lxc!.check();
  } catch (err) {
    // Slivers without the limits they are promised are worse than none: the driver stays failed,
    // so every container sliver shows this one line as its error, and the node reports lxc: false.
    if (!isInstanceError(err, 'missing_limits')) throw err;
    log?.error({ err: err.message }, 'this node runs no container slivers');
  }
  await network.check();
  return { storage, instances, network, off };
}
