// Builds and checks this node's drivers from its settings: storage, instances, network.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { instanceDrivers } from '@planetlite/instance';
import { networkDrivers } from '@planetlite/network';
import { drivers as storageDrivers, type StorageDriver } from '@planetlite/storage';
import { SliverInstances } from './instances.js';
import type { Drivers } from './reconcile.js';
import type { AgentSettings } from './settings.js';
import { withStateLock } from './state.js';

/** The node's btrfs pool, opened (created, formatted and mounted on first use) under the state
 * dir's lock, so that two agent processes never do that at once. */
export async function openStorage(settings: AgentSettings, stateDir: string): Promise<StorageDriver> {
  const storage = storageDrivers.btrfs!({ pool: settings.pool, size: settings.pool_size, mountpoint: settings.pool_mount });
  await withStateLock(stateDir, 'opening the storage pool', () => storage.open());
  return storage;
}

/**
 * The node's drivers. LXC is checked before this returns; the VM driver (unless settings.vm is
 * 'off') is checked in the background by the caller (SliverInstances.checkVm).
 */
export async function openDrivers(settings: AgentSettings, publicAddress: string, stateDir: string, kindOf: (id: string) => 'lxc' | 'kvm' | undefined = () => undefined, probeIdmapBase?: number): Promise<Drivers & { instance: SliverInstances }> {
  const storage = await openStorage(settings, stateDir);
  mkdirSync(settings.lxc_path, { recursive: true, mode: 0o711 });
  const where = { lxcPath: settings.lxc_path, rootfsDir: settings.pool_mount, ...(settings.netns ? { netns: settings.netns } : {}) };
  let vm: ReturnType<NonNullable<typeof instanceDrivers.qemu>> | null = null;
  let vmOff = 'VM slivers are off on this node (planetlite-agent run --vm off)';
  try {
    if (settings.vm !== 'off') vm = instanceDrivers.qemu!({ ...where, vmPath: join(stateDir, 'vm') });
  } catch (err) {
    vmOff = err instanceof Error ? err.message : String(err);
  }
  const instance = new SliverInstances({
    lxc: instanceDrivers.lxc!({ ...where, ...(probeIdmapBase !== undefined ? { probeIdmapBase } : {}) }),
    vm,
    vmOff,
    kindOf,
  });
  const network = networkDrivers.nftables!({
    publicAddress,
    sliverSubnet: settings.sliver_subnet,
    ...(settings.netns ? { netns: settings.netns } : {}),
  });
  await instance.check();
  await network.check();
  return { storage, instance, network };
}
