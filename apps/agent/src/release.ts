// `planetlite-agent release`: takes a node out of PlanetLite's hands. A stopped agent keeps its
// slivers, their links, its nftables table, tc/ifb devices and the pool mount on purpose (slivers
// outlive a restart or an upgrade); this stops the slivers and releases all of that, and unless
// asked to keep data, deletes the pool file and the state dir (node key included) too.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { instanceDrivers, type InstanceDriver } from '@planetlite/instance';
import { networkDrivers } from '@planetlite/network';
import { drivers as storageDrivers } from '@planetlite/storage';
import { Ledger } from './ledger.js';
import { loadSettings, type AgentSettings } from './settings.js';
import { withStateLock } from './state.js';

/** The pid of `run` is kept here while it runs, so that release refuses a live agent. */
export const PID_FILE = 'agent.pid';

export interface ReleaseOptions {
  stateDir: string;
  /** Keep the pool file (slivers' disks and images), the ledger and the node's enrollment. */
  keepData: boolean;
}

/** The pid of a live `planetlite-agent run` on this state dir, or null. */
export function runningAgent(stateDir: string): number | null {
  const file = join(stateDir, PID_FILE);
  if (!existsSync(file)) return null;
  const pid = Number(readFileSync(file, 'utf8').trim());
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid === process.pid) return null;
  const cmdline = (() => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return '';
    }
  })();
  return /planetlite-agent|agent\.mjs/.test(cmdline) ? pid : null;
}

/** Releases everything; returns one line per kind of thing released. */
export async function releaseNode(opts: ReleaseOptions): Promise<string[]> {
  const { stateDir } = opts;
  if (!existsSync(stateDir)) throw new Error(`${stateDir} does not exist: nothing to release`);
  const pid = runningAgent(stateDir);
  if (pid !== null) throw new Error(`the agent is running on ${stateDir} (pid ${pid}); stop it first (systemctl stop planetlite-agent)`);
  const settings = loadSettings(stateDir);
  const done: string[] = [];
  await withStateLock(stateDir, 'release', async () => {
    const where = { lxcPath: settings.lxc_path, rootfsDir: settings.pool_mount, ...(settings.netns ? { netns: settings.netns } : {}) };
    // No check(): a release must work on a node whose tools or address changed since.
    const drivers: InstanceDriver[] = [instanceDrivers.lxc!(where)];
    const vmPath = join(stateDir, 'vm');
    if (existsSync(vmPath)) {
      try {
        drivers.push(instanceDrivers.qemu!({ ...where, vmPath }));
      } catch (err) {
        throw new Error(`VM slivers live in ${vmPath} but the qemu driver cannot load: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
    let slivers = 0;
    for (const d of drivers) {
      for (const id of await d.list()) {
        await d.destroy(id);
        slivers++;
      }
    }
    done.push(`${slivers} sliver(s) stopped and their containers/VMs removed`);

    if (settings.netns && !existsSync(`/run/netns/${settings.netns}`)) {
      // A testbed's node namespace deleted before release: its links and table went with it.
      done.push(`network namespace ${settings.netns} is gone, and its links and nftables table with it`);
    } else {
      await releaseNetwork(settings, done);
    }

    const storage = storageDrivers.btrfs!({ pool: settings.pool, size: settings.pool_size, mountpoint: settings.pool_mount });
    if (opts.keepData) {
      await storage.close();
      done.push(`pool ${settings.pool} unmounted from ${settings.pool_mount} (loop device detached); kept with the slivers' disks`);
    } else {
      await storage.destroy();
      const device = !settings.pool.startsWith('/dev/') ? 'deleted' : 'unmounted (the device itself is left as it is)';
      done.push(`pool ${settings.pool} ${device}`);
    }
  });
  if (opts.keepData) {
    done.push(`kept in ${stateDir}: the node's enrollment, settings, images and the ledger of ${new Ledger(stateDir).slivers().length} sliver(s); \`run\` builds them again`);
  } else {
    for (const dir of [settings.lxc_path, settings.pool_mount]) rmSync(dir, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
    done.push(`state dir ${stateDir} deleted (node key included: enroll again to come back)`);
  }
  return done;
}

async function releaseNetwork(settings: AgentSettings, done: string[]): Promise<void> {
  const network = networkDrivers.nftables!({ publicAddress: '0.0.0.0', sliverSubnet: settings.sliver_subnet, ...(settings.netns ? { netns: settings.netns } : {}) });
  const links = (await network.listAttached()).length;
  await network.teardown();
  done.push(`nftables table inet planetlite deleted; ${links} sliver link(s) and their tc/ifb devices removed`);
}
