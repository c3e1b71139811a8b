// What an agent left on its node, by kind: the leak check of the fault campaigns and the e2e
// tests. A node with no sliver wanted must show none of these: containers, links, nftables
// chains, tc qdiscs or ifb devices, pool subvolumes, stale qgroups, LXC cgroups, mounts, loop
// devices, ledger records, VM processes. Read from the host only (never through the agent).
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { tryRun } from '@planetlite/host';
import { readLedger } from '@planetlite/agent';

export const LEAK_KINDS = ['containers', 'links', 'nft chains', 'tc/ifb', 'subvolumes', 'qgroups', 'cgroups', 'mounts', 'loop devices', 'ledger records', 'VM processes'] as const;
export type LeakKind = (typeof LEAK_KINDS)[number];
export type Leaks = Record<LeakKind, string[]>;

export interface LeakScope {
  /** The agent's state dir (lxcpath STATE/lxc, pool STATE/pool, ledger STATE/ledger/, VMs STATE/vm). */
  stateDir: string;
  /** The node's network namespace. */
  ns: string;
  /** The pool's loop file: its own loop device is the node's, not a leak. */
  poolFile: string;
  /** Every sliver the test made on any node: their cgroups are looked for even once nothing else names them. */
  ids?: Iterable<string>;
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
/** Sliver devices: host end plh…, peer pls…, ifb pli… (packages/network names.ts). */
const SLIVER_LINK = /^pl[hsi][0-9a-f]{12}$/;

/** Everything of slivers on this node, by kind (a node with no sliver wanted: every list empty). */
export async function nodeLeaks(scope: LeakScope): Promise<Leaks> {
  const { stateDir, ns } = scope;
  const out = Object.fromEntries(LEAK_KINDS.map((k) => [k, [] as string[]])) as unknown as Leaks;
  const lxcPath = join(stateDir, 'lxc');
  const pool = join(stateDir, 'pool');

  const containers = new Set<string>();
  for (const name of await readdir(lxcPath).catch(() => [] as string[])) if (name.startsWith('sl-')) containers.add(name);
  // --active: a plain lxc-ls loads every config and so makes a container directory the agent is
  // removing right then again (LXC opens the log the config names); defined ones are the directories.
  for (const name of (await tryRun('lxc-ls', ['--active', '-P', lxcPath]))?.stdout.split(/\s+/).filter(Boolean) ?? []) containers.add(name);
  out.containers.push(...[...containers].map((c) => `${c} in ${lxcPath}`));

  const links = JSON.parse((await tryRun('ip', ['-n', ns, '-d', '-j', 'link', 'show']))?.stdout || '[]') as Array<{ ifname?: string; ifalias?: string; linkinfo?: { info_kind?: string } }>;
  for (const l of links) {
    if (!l.ifname || !SLIVER_LINK.test(l.ifname)) continue;
    if (l.ifname.startsWith('pli') || l.linkinfo?.info_kind === 'ifb') out['tc/ifb'].push(`ifb ${l.ifname} (${l.ifalias ?? 'no alias'}) in ${ns}`);
    else out.links.push(`${l.ifname} (${l.ifalias ?? 'no alias'}) in ${ns}`);
  }
  // A qdisc of ours on any device that is not a sliver's (the public link, lo) would be a leak too.
  const qdiscs = JSON.parse((await tryRun('ip', ['netns', 'exec', ns, 'tc', '-j', 'qdisc', 'show']))?.stdout || '[]') as Array<{ kind?: string; dev?: string; root?: boolean }>;
  for (const q of qdiscs) if (q.kind === 'htb' || q.kind === 'ingress') out['tc/ifb'].push(`qdisc ${q.kind} on ${q.dev} in ${ns}`);

  const table = (await tryRun('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'planetlite']))?.stdout ?? '';
  // A sliver is entries in the table's maps; its sliver_sources entry names its device. (Older
  // tables had chains named sliver_ID: one left over is a leak too.)
  for (const m of new Set([...table.matchAll(new RegExp(`chain (sliver_${UUID.source}\\S*)`, 'g'))].map((x) => x[1]!))) out['nft chains'].push(`chain ${m} in table inet planetlite of ${ns}`);
  for (const dev of new Set([...table.matchAll(/"(pl[hsi][0-9a-f]{12})"/g)].map((x) => x[1]!))) out['nft chains'].push(`device ${dev} named in table inet planetlite of ${ns}`);
  for (const m of table.matchAll(/(?:map|set) (\w+) \{[^}]*elements = \{/g)) out['nft chains'].push(`entries in ${m[1]} of table inet planetlite of ${ns}`);

  const subvolumes = (await tryRun('btrfs', ['subvolume', 'list', pool]))?.stdout ?? '';
  const subvolIds = new Set<number>([5]);
  for (const line of subvolumes.split('\n')) {
    const m = /^ID (\d+) .* path (.*)$/.exec(line);
    if (!m) continue;
    subvolIds.add(Number(m[1]));
    if (m[2]!.startsWith('slivers/')) out.subvolumes.push(`btrfs subvolume ${m[2]} in ${pool}`);
  }
  for (const name of await readdir(join(pool, 'slivers')).catch(() => [] as string[])) if (!subvolumes.includes(`slivers/${name}`)) out.subvolumes.push(`directory ${join(pool, 'slivers', name)}`);
  // A level-0 qgroup whose subvolume is gone: left by a deletion cut short.
  const qgroups = (await tryRun('btrfs', ['qgroup', 'show', '--raw', pool]))?.stdout ?? '';
  for (const line of qgroups.split('\n')) {
    const id = /^0\/(\d+)\s/.exec(line)?.[1];
    if (id && !subvolIds.has(Number(id))) out.qgroups.push(`qgroup 0/${id} of no subvolume in ${pool}`);
  }

  const hierarchies = ['/sys/fs/cgroup', ...(await readdir('/sys/fs/cgroup', { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory()).map((e) => join('/sys/fs/cgroup', e.name))];
  const ids = new Set<string>([...(scope.ids ?? []), ...[...containers].map((c) => c.slice(3))]);
  for (const r of await ledger(stateDir)) ids.add(r);
  for (const line of subvolumes.split('\n')) {
    const id = UUID.exec(line)?.[0];
    if (id) ids.add(id);
  }
  for (const h of hierarchies) {
    for (const name of await readdir(h).catch(() => [] as string[])) {
      const id = /^lxc\.(?:payload|monitor)\.sl-(.*)$/.exec(name)?.[1];
      // Every sliver cgroup of this node's slivers, plus any whose id the node still names.
      if (id && (ids.has(id) || (await ownedBy(stateDir, id)))) out.cgroups.push(join(h, name));
    }
  }

  const mounts = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of mounts.split('\n')) {
    const point = line.split(' ')[4];
    if (point && (point.startsWith(join(pool, 'slivers') + '/') || point.startsWith(lxcPath + '/'))) out.mounts.push(point);
  }

  const loops = (await tryRun('losetup', ['-J', '-l']))?.stdout ?? '';
  for (const dev of (JSON.parse(loops || '{"loopdevices":[]}') as { loopdevices: Array<{ name: string; 'back-file': string | null }> }).loopdevices) {
    const file = dev['back-file']?.replace(/ \(deleted\)$/, '') ?? '';
    if (file.startsWith(stateDir + '/') && file !== scope.poolFile) out['loop devices'].push(`${dev.name} on ${file}`);
  }

  for (const id of await ledger(stateDir)) out['ledger records'].push(`${id} in ${join(stateDir, 'ledger')}`);

  const qemu = (await tryRun('pgrep', ['-a', '-f', `qemu-system.*${join(stateDir, 'vm')}/`]))?.stdout ?? '';
  for (const line of qemu.split('\n').filter(Boolean)) out['VM processes'].push(line.slice(0, 160));
  return out;
}

/** Loop devices backed by a file that is gone or by the pool file after the node was removed. */
export async function poolLoopLeaks(poolFile: string): Promise<string[]> {
  const out = (await tryRun('losetup', ['-j', poolFile]))?.stdout ?? '';
  return out.split('\n').filter(Boolean);
}

async function ledger(stateDir: string): Promise<string[]> {
  return readLedger(stateDir).map((r) => r.id);
}

/** A cgroup of a sliver this node once had: its console log or config dir survives in the lxcpath. */
async function ownedBy(stateDir: string, id: string): Promise<boolean> {
  return stat(join(stateDir, 'lxc', `sl-${id}`)).then(() => true, () => false);
}

/** Sum of several nodes' leaks, by kind, and the total. */
export function countLeaks(all: Leaks[]): { byKind: Record<LeakKind, number>; total: number; lines: string[] } {
  const byKind = Object.fromEntries(LEAK_KINDS.map((k) => [k, all.reduce((n, l) => n + l[k].length, 0)])) as Record<LeakKind, number>;
  const lines = all.flatMap((l) => LEAK_KINDS.flatMap((k) => l[k].map((x) => `${k}: ${x}`)));
  return { byKind, total: lines.length, lines };
}
