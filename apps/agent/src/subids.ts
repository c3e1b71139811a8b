// Host id ranges for slivers' user namespaces. With Debian's `uidmap` installed (newuidmap on
// PATH), LXC maps ids through newuidmap/newgidmap even for root, and those refuse any range
// outside root's lines in /etc/subuid and /etc/subgid: then every sliver's range must lie inside
// them. Without uidmap the agent keeps its own layout from IDMAP_FIRST, as before.
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Ids each sliver gets (its 0..65535 mapped to BASE..BASE+65535). */
export const IDMAP_SIZE = 65_536;
/** Without subordinate ranges: host ids from here up, above the usual system and user ids. */
export const IDMAP_FIRST = 1_000_000;

/** Where slivers' ids come from: slot i maps to first + i * IDMAP_SIZE; `probe` is a block of
 * its own for the LXC driver's short-lived idmap check. */
export interface SliverIdRange {
  first: number;
  slots: number;
  probe: number;
  /** 'subid': inside root's /etc/subuid and /etc/subgid ranges; 'own': the agent's layout. */
  source: 'subid' | 'own';
}

export interface IdRange {
  start: number;
  count: number;
}

/** Host id of slot `slot`. */
export const idmapBase = (range: SliverIdRange, slot: number): number => range.first + slot * IDMAP_SIZE;

/** Root's ranges in a subuid/subgid file's text ("root:100000:65536" or "0:100000:65536"). */
export function rootRanges(text: string): IdRange[] {
  const out: IdRange[] = [];
  for (const line of text.split('\n')) {
    const [who, start, count] = line.trim().split(':');
    if ((who !== 'root' && who !== '0') || !/^\d+$/.test(start ?? '') || !/^\d+$/.test(count ?? '')) continue;
    out.push({ start: Number(start), count: Number(count) });
  }
  return out;
}

/** The largest run of ids inside both a uid range and a gid range, aligned to IDMAP_SIZE steps
 * from its own start; null when none holds one sliver. */
export function commonRange(uids: IdRange[], gids: IdRange[]): IdRange | null {
  let best: IdRange | null = null;
  for (const u of uids) {
    for (const g of gids) {
      const start = Math.max(u.start, g.start);
      const end = Math.min(u.start + u.count, g.start + g.count);
      if (end - start >= IDMAP_SIZE && (!best || end - start > best.count)) best = { start, count: end - start };
    }
  }
  return best;
}

/** Ranges the installer reserves for root: the node's slots (one /30 each of the sliver subnet)
 * plus the probe's block, from IDMAP_FIRST, so slivers made before uidmap came keep their ids. */
export function rangeToReserve(slots: number): IdRange {
  return { start: IDMAP_FIRST, count: (slots + 1) * IDMAP_SIZE };
}

function onPath(cmd: string, path = process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'): boolean {
  return path.split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export interface SubidFiles {
  subuid: string;
  subgid: string;
  /** Whether LXC will go through newuidmap/newgidmap (Debian's uidmap package). */
  newuidmap: boolean;
}

export function hostSubidFiles(etc = '/etc'): SubidFiles {
  const read = (f: string) => (existsSync(join(etc, f)) ? readFileSync(join(etc, f), 'utf8') : '');
  return { subuid: read('subuid'), subgid: read('subgid'), newuidmap: onPath('newuidmap') && onPath('newgidmap') };
}

/**
 * The id range this node's slivers use. Root's subordinate ranges when it has some (the largest
 * run common to /etc/subuid and /etc/subgid); the agent's own layout when it has none and
 * newuidmap is absent. Throws one line when LXC would refuse every sliver: uidmap installed and
 * no range for root, or one too small for a sliver (plus the probe), or for the slots the
 * ledger already holds, or when slivers made before have ids outside it. `wantSlots`: the slots
 * the sliver subnet has; `held`: the ledger's records.
 */
export function sliverIdRange(files: SubidFiles, wantSlots: number, held: readonly { slot: number; idmap_base: number }[] = []): SliverIdRange {
  const uids = rootRanges(files.subuid);
  const gids = rootRanges(files.subgid);
  const fix = (n: number) => {
    const r = rangeToReserve(n);
    return `usermod --add-subuids ${r.start}-${r.start + r.count - 1} --add-subgids ${r.start}-${r.start + r.count - 1} root`;
  };
  if (uids.length === 0 && gids.length === 0) {
    if (!files.newuidmap) return { first: IDMAP_FIRST, slots: wantSlots, probe: 0xfffe0000, source: 'own' };
    throw new Error(`newuidmap is installed (Debian's uidmap), so LXC needs root's subordinate ids, but root has no range in /etc/subuid and /etc/subgid; reserve them with: ${fix(wantSlots)}`);
  }
  const common = commonRange(uids, gids);
  const slots = common ? Math.floor(common.count / IDMAP_SIZE) - 1 : 0;
  const highest = Math.max(-1, ...held.map((r) => r.slot));
  if (slots < 1 || highest >= slots) {
    const have = common ? `${common.count} ids in common from ${common.start}` : 'no range common to both files';
    const need = Math.max(2, highest + 2);
    throw new Error(`root's subordinate ids in /etc/subuid and /etc/subgid are too small for this node's slivers (${have}; need ${need} blocks of ${IDMAP_SIZE}); reserve them with: ${fix(Math.max(wantSlots, need - 1))}`);
  }
  // The last block is the probe's; slots never reach it.
  const range: SliverIdRange = { first: common!.start, slots: Math.min(slots, wantSlots), probe: common!.start + slots * IDMAP_SIZE, source: 'subid' };
  const moved = held.filter((r) => r.idmap_base !== idmapBase(range, r.slot));
  if (moved.length > 0)
    throw new Error(`${moved.length} sliver(s) on this node have host ids outside root's subordinate range starting at ${range.first} (first at ${moved[0]!.idmap_base}); reserve the range they were made in with: ${fix(Math.max(wantSlots, highest + 1))}`);
  return range;
}
