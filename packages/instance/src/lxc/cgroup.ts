// Which cgroup hierarchy holds each controller on this host, and reading a sliver's memory from it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join } from 'node:path';

export type CgroupVersion = 'v1' | 'v2';

/**
 * Hosts come in three layouts, and LXC needs a different config key for each controller:
 * - legacy: every controller on its own v1 hierarchy → `lxc.cgroup.<file>`;
 * - hybrid: v1 controllers plus a v2 tree (this project's machines: memory, cpu, pids, freezer
 *   and devices on v1, and /sys/fs/cgroup/unified with no controllers beyond hugetlb). A
 *   controller bound to v1 cannot appear in v2, so its keys stay `lxc.cgroup.*`; only a
 *   controller listed in the v2 root's cgroup.controllers takes `lxc.cgroup2.*`;
 * - unified: v2 only → `lxc.cgroup2.<file>` (memory.max, cpu.weight, pids.max); freezing is
 *   built into v2 (cgroup.freeze) and device rules are eBPF programs, so both are always there.
 * LXC itself freezes through v1 unless the layout is unified, hence freezer/devices never map to
 * v2 on a hybrid host.
 */
export interface CgroupLayout {
  mode: 'legacy' | 'hybrid' | 'unified';
  memory: CgroupVersion | null;
  cpu: CgroupVersion | null;
  pids: CgroupVersion | null;
  freezer: CgroupVersion | null;
  devices: CgroupVersion | null;
}

export interface CgroupMount {
  type: 'cgroup' | 'cgroup2';
  mountPoint: string;
  options: string[];
}

/** The cgroup and cgroup2 lines of /proc/self/mounts. */
export function parseCgroupMounts(procMounts: string): CgroupMount[] {
  const out: CgroupMount[] = [];
  for (const line of procMounts.split('\n')) {
    const [, mountPoint, type, options] = line.split(' ');
    if ((type === 'cgroup' || type === 'cgroup2') && mountPoint && options !== undefined)
      out.push({ type, mountPoint: mountPoint.replace(/\\040/g, ' '), options: options.split(',') });
  }
  return out;
}

/** Pure: the layout from /proc/self/mounts and the v2 root's cgroup.controllers (null if no v2 mount). */
export function parseCgroupLayout(procMounts: string, unifiedControllers: string | null): CgroupLayout {
  const mounts = parseCgroupMounts(procMounts);
  const v1 = new Set(mounts.filter((m) => m.type === 'cgroup').flatMap((m) => m.options));
  const v2Mounted = mounts.some((m) => m.type === 'cgroup2');
  const v2 = new Set(v2Mounted && unifiedControllers ? unifiedControllers.trim().split(/\s+/) : []);
  const anyV1Controller = ['memory', 'cpu', 'pids', 'freezer', 'devices', 'cpuset', 'blkio'].some((c) => v1.has(c));
  const mode: CgroupLayout['mode'] = !anyV1Controller && v2Mounted ? 'unified' : v2Mounted ? 'hybrid' : 'legacy';
  const place = (controller: string, builtInV2: boolean): CgroupVersion | null =>
    v1.has(controller) ? 'v1' : v2.has(controller) || (builtInV2 && mode === 'unified') ? 'v2' : null;
  return {
    mode,
    memory: place('memory', false),
    cpu: place('cpu', false),
    pids: place('pids', false),
    freezer: place('freezer', true),
    devices: place('devices', true),
  };
}

/**
 * The limits a sliver is promised that this layout cannot enforce, in words (empty: all of them
 * can). A process that sees no cgroup hierarchy at all (started under `ip netns exec`, which
 * remounts /sys) gets all three.
 */
export function missingLimits(layout: CgroupLayout): string[] {
  return (['memory', 'cpu', 'pids'] as const).filter((c) => layout[c] === null);
}

/** Reads this host's layout. */
export async function detectCgroupLayout(): Promise<CgroupLayout> {
  const procMounts = await readFile('/proc/self/mounts', 'utf8');
  const unified = parseCgroupMounts(procMounts).find((m) => m.type === 'cgroup2');
  const controllers = unified
    ? await readFile(join(unified.mountPoint, 'cgroup.controllers'), 'utf8').catch(() => '')
    : null;
  return parseCgroupLayout(procMounts, controllers);
}

/** `memory.stat` as numbers. */
export function parseMemoryStat(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined && /^\d+$/.test(value)) out.set(key, Number(value));
  }
  return out;
}

/**
 * Resident memory as the watchdog should see it (PlanetLab's pl_mom ranked slivers by RSS):
 * anonymous memory plus mapped file pages, without the reclaimable page cache that
 * memory.usage_in_bytes / memory.current also count. v1's total_* fields include child cgroups
 * the sliver may have made.
 */
export function residentBytes(stat: Map<string, number>, version: CgroupVersion): number | null {
  const pick = (...keys: string[]): number | undefined => keys.map((k) => stat.get(k)).find((v) => v !== undefined);
  const [anon, mapped] =
    version === 'v1'
      ? [pick('total_rss', 'rss'), pick('total_mapped_file', 'mapped_file')]
      : [pick('anon'), pick('file_mapped')];
  return anon === undefined ? null : anon + (mapped ?? 0);
}

/** Per cgroup mount, the directories under which LXC (run as root) makes its cgroups: the
 * hierarchy's root and the cgroup of pid 1 in it (the qemu driver puts its VMs there too). */
export async function lxcCgroupParentsByMount(): Promise<Array<{ mount: CgroupMount; parents: string[] }>> {
  const mounts = parseCgroupMounts(await readFile('/proc/self/mounts', 'utf8'));
  const init = await readFile('/proc/1/cgroup', 'utf8').catch(() => '');
  return mounts.map((m) => {
    const parents = new Set<string>([m.mountPoint]);
    for (const line of init.split('\n')) {
      const [, controllers = '', path = ''] = /^\d+:([^:]*):(.*)$/.exec(line) ?? [];
      const matches = m.type === 'cgroup2' ? controllers === '' : controllers !== '' && controllers.split(',').every((c) => m.options.includes(c));
      if (matches && path && path !== '/') parents.add(join(m.mountPoint, path));
    }
    return { mount: m, parents: [...parents] };
  });
}

async function lxcCgroupParents(): Promise<string[]> {
  return [...new Set((await lxcCgroupParentsByMount()).flatMap((h) => h.parents))];
}

/**
 * Where to read a container's state and memory straight from cgroupfs, without asking LXC (one
 * lxc-info per sliver and pass does not scale to a thousand slivers): the candidate parent
 * directories of the hierarchies that answer "has processes", "frozen" and "memory".
 */
export interface PayloadProbe {
  /** v1 pids hierarchy (pids.current counts the whole subtree) or the v2 tree (cgroup.events). */
  populated: { version: CgroupVersion; parents: string[] } | null;
  /** v1 freezer hierarchy (freezer.state) or the v2 tree (cgroup.events frozen). */
  frozen: { version: CgroupVersion; parents: string[] } | null;
  memory: { version: CgroupVersion; parents: string[] } | null;
  /** v1 cpuacct hierarchy (cpuacct.usage, ns) or the v2 tree (cpu.stat usage_usec). */
  cpu: { version: CgroupVersion; parents: string[] } | null;
  /** The v2 tree (memory.pressure): PSI is kept there for every cgroup, also on a hybrid host
   * whose memory controller is on v1. */
  pressure: { version: 'v2'; parents: string[] } | null;
  /** Where each limited controller's files are (memory.limit_in_bytes, cpu.shares, pids.max…). */
  limits: Record<'memory' | 'cpu' | 'pids', { version: CgroupVersion; parents: string[] } | null>;
}

export async function payloadProbe(layout: CgroupLayout): Promise<PayloadProbe> {
  const byMount = await lxcCgroupParentsByMount();
  const v2 = byMount.find((h) => h.mount.type === 'cgroup2')?.parents ?? null;
  const v1 = (controller: string) => byMount.find((h) => h.mount.type === 'cgroup' && h.mount.options.includes(controller))?.parents ?? null;
  const pick = (version: CgroupVersion | null, controller: string) => {
    const parents = version === 'v1' ? v1(controller) : version === 'v2' ? v2 : null;
    return parents && version ? { version, parents } : null;
  };
  return {
    populated: layout.mode === 'unified' ? pick('v2', '') : pick(layout.pids, 'pids'),
    frozen: layout.mode === 'unified' ? pick('v2', '') : pick(layout.freezer, 'freezer'),
    memory: pick(layout.memory, 'memory'),
    cpu: layout.cpu === 'v2' ? pick('v2', '') : pick(layout.cpu, 'cpuacct'),
    pressure: v2 ? { version: 'v2', parents: v2 } : null,
    limits: { memory: pick(layout.memory, 'memory'), cpu: pick(layout.cpu, 'cpu'), pids: pick(layout.pids, 'pids') },
  };
}

/** The container's payload cgroup directory among parents, or null when LXC has none (stopped).
 * Synchronous on purpose, like readCgroupFile: a pass reads a few small cgroupfs files per sliver,
 * and for a thousand slivers a thread-pool round trip per file costs more than the reads. */
export function findPayload(name: string, parents: string[]): string | null {
  for (const parent of parents) {
    const dir = join(parent, `lxc.payload.${name}`);
    if (statSync(dir, { throwIfNoEntry: false })?.isDirectory()) return dir;
  }
  return null;
}

/** A process of the cgroup at `dir` or of one below it (a container's init may sit in a child
 * cgroup of its own, as systemd puts itself in init.scope); null when there is none. */
export function pidIn(dir: string, depth = 3): number | null {
  const first = readCgroupFile(dir, 'cgroup.procs')?.split('\n').find((l) => l.trim() !== '');
  if (first) return Number(first);
  if (depth === 0) return null;
  let children: string[];
  try {
    children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return null;
  }
  for (const child of children) {
    const pid = pidIn(join(dir, child), depth - 1);
    if (pid !== null) return pid;
  }
  return null;
}

export function readCgroupFile(dir: string, file: string): string | null {
  try {
    return readFileSync(join(dir, file), 'utf8');
  } catch {
    return null;
  }
}

/** PSI avg10 figures, percent of time some / all non-idle tasks stalled. */
export interface Psi {
  some: number;
  full: number;
}

/** avg10 of the "some" and "full" lines of a cgroup's memory.pressure or /proc/pressure/memory. */
export function parsePressure(text: string): Psi | null {
  const avg = (kind: string) => {
    const m = new RegExp(`^${kind} .*avg10=([0-9.]+)`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  };
  const some = avg('some');
  return some === null ? null : { some, full: avg('full') ?? 0 };
}

/** CPU time a payload cgroup has used, in seconds, from cpuacct.usage (v1) or cpu.stat (v2). */
export function cpuSecondsOf(dir: string, version: CgroupVersion): number | null {
  if (version === 'v1') {
    const ns = Number(readCgroupFile(dir, 'cpuacct.usage')?.trim());
    return Number.isFinite(ns) ? ns / 1e9 : null;
  }
  const m = /^usage_usec (\d+)$/m.exec(readCgroupFile(dir, 'cpu.stat') ?? '');
  return m ? Number(m[1]) / 1e6 : null;
}

/** rmdir a cgroup and its children, deepest first (cgroup directories hold only control files). */
async function removeCgroupTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  for (const e of entries) if (e.isDirectory()) await removeCgroupTree(join(dir, e.name));
  for (let attempt = 0; ; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      // EBUSY: LXC's monitor may still be leaving it; give it a moment.
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY' || attempt >= 40) throw err;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/**
 * Removes what LXC left of a stopped container's cgroups (lxc.monitor.NAME, lxc.payload.NAME) in
 * every hierarchy. LXC removes them itself after a normal stop, but not after every failed start.
 * Returns the directories it removed.
 */
export async function removeContainerCgroups(name: string): Promise<string[]> {
  const removed: string[] = [];
  for (const parent of await lxcCgroupParents()) {
    for (const prefix of ['lxc.monitor.', 'lxc.payload.']) {
      const dir = join(parent, prefix + name);
      try {
        await removeCgroupTree(dir);
        removed.push(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }
  return removed;
}
