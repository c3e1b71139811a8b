// A VM sliver's cgroups: the same limits as a container's (memory, cpu weight and cap, pids) plus
// an I/O weight, in the same place LXC puts a container's payload (`lxc.payload.sl-ID` in every
// hierarchy), so accounting, the watchdog and the leftover checks find VMs and containers alike.
// The jail helper moves qemu in before it drops root (jail.ts).
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { InstanceSpec } from '../driver.js';
import { lxcCgroupParentsByMount, type CgroupLayout, type CgroupVersion } from '../lxc/cgroup.js';
import { resourceLimits } from '../lxc/config.js';

/** What qemu itself needs beyond the guest's RAM (TCG's 32 MiB translation cache, device and 9p
 * buffers, its own code): memory.max is guest RAM plus this, so the guest, not qemu, runs out. */
export const VM_MEMORY_OVERHEAD_MB = 256;

/** Controllers a VM's qemu joins; cpuacct (v1) is where its CPU time is read. */
const CONTROLLERS = ['memory', 'cpu', 'cpuacct', 'pids', 'blkio'] as const;
type Controller = (typeof CONTROLLERS)[number];

export interface VmCgroup {
  /** The sliver's directory in each hierarchy it joins (v2: one directory for all). */
  dirs: Partial<Record<Controller, { dir: string; version: CgroupVersion }>>;
}

/** The limits of a spec as cgroup files: LXC's own for memory, cpu and pids, memory raised by
 * qemu's overhead, and an I/O weight from the cpu shares (1024 shares = the default weight). */
export function vmLimits(spec: Pick<InstanceSpec, 'memoryMb' | 'cpuShares' | 'cpuCapPercent' | 'pids'>, layout: CgroupLayout): Array<{ file: string; value: string }> {
  const limits = resourceLimits({ ...spec, memoryMb: spec.memoryMb + VM_MEMORY_OVERHEAD_MB } as InstanceSpec, layout).map(({ file, value }) => ({ file, value }));
  return [...limits, ...ioWeights(spec.cpuShares)];
}

/** The I/O weight in each file a host may offer (BFQ's or the block layer's, v1 or v2); the
 * driver writes those present. v1 weights run 10..1000 (default 500), v2 1..10000 (default 100). */
export function ioWeights(cpuShares: number): Array<{ file: string; value: string }> {
  const scale = (dflt: number, min: number, max: number) => String(Math.min(max, Math.max(min, Math.round((cpuShares / 1024) * dflt))));
  return [
    { file: 'blkio.bfq.weight', value: scale(100, 1, 1000) },
    { file: 'blkio.weight', value: scale(500, 10, 1000) },
    { file: 'io.bfq.weight', value: scale(100, 1, 1000) },
    { file: 'io.weight', value: `default ${scale(100, 1, 10000)}` },
  ];
}

/** Where the sliver's cgroups go on this host (not made yet). */
export async function vmCgroup(name: string, layout: CgroupLayout): Promise<VmCgroup> {
  const byMount = await lxcCgroupParentsByMount();
  const v2 = byMount.find((h) => h.mount.type === 'cgroup2')?.parents[0];
  const dirs: VmCgroup['dirs'] = {};
  for (const c of CONTROLLERS) {
    const v1 = byMount.find((h) => h.mount.type === 'cgroup' && h.mount.options.includes(c))?.parents[0];
    if (v1) dirs[c] = { dir: join(v1, `lxc.payload.${name}`), version: 'v1' };
    else if (v2 && layout.mode === 'unified') dirs[c] = { dir: join(v2, `lxc.payload.${name}`), version: 'v2' };
  }
  return { dirs };
}

/** Every distinct directory of a VM's cgroup. */
export const cgroupDirs = (cg: VmCgroup): string[] => [...new Set(Object.values(cg.dirs).map((d) => d.dir))];

/** Makes the directories and writes the limits, each into the hierarchy of its controller. Files
 * the host lacks (an I/O weight without BFQ) are skipped and returned; a limit the kernel refuses
 * throws. */
export async function applyVmLimits(cg: VmCgroup, limits: Array<{ file: string; value: string }>): Promise<string[]> {
  for (const dir of cgroupDirs(cg)) await mkdir(dir, { recursive: true });
  const skipped: string[] = [];
  for (const { file, value } of limits) {
    const controller = (file.startsWith('io.') ? 'blkio' : file.split('.')[0]) as Controller;
    const at = cg.dirs[controller];
    if (!at || !existsSync(join(at.dir, file))) {
      skipped.push(file);
      continue;
    }
    await writeFile(join(at.dir, file), value);
  }
  return skipped;
}
