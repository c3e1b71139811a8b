// Private helpers of the btrfs driver: host probes and thin wrappers over btrfs-progs,
// util-linux and tar. Every command goes through @planetlite/host's run()/tryRun().
import { lstat, readFile } from 'node:fs/promises';
import { CommandError, requireTools as requireHostTools, run, tryRun } from '@planetlite/host';
import { StorageError } from '../errors.js';

// ---------------------------------------------------------------------------------------------
// Host probes

export { missingTools } from '@planetlite/host';

/** Throws one StorageError naming every missing tool and the package that provides it. */
export function requireTools(tools: readonly string[], why: string): Promise<void> {
  return requireHostTools(tools, why, (m) => new StorageError('missing_tool', m));
}

async function kernelHasFilesystem(fs: string): Promise<boolean> {
  const text = await readFile('/proc/filesystems', 'utf8');
  return text.split('\n').some((line) => line.split('\t').at(-1)?.trim() === fs);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Checks the kernel can mount btrfs (loading the module if modprobe can) and, for loop pools, attach loop devices. */
export async function requireKernel(loop: boolean): Promise<void> {
  if (!(await kernelHasFilesystem('btrfs'))) {
    await tryRun('modprobe', ['btrfs']);
    if (!(await kernelHasFilesystem('btrfs'))) {
      throw new StorageError(
        'missing_kernel_feature',
        'the kernel has no btrfs filesystem: /proc/filesystems lacks btrfs and `modprobe btrfs` did not load it (install this kernel\'s btrfs module, or build btrfs in)',
      );
    }
  }
  if (loop && !(await exists('/dev/loop-control'))) {
    await tryRun('modprobe', ['loop']);
    if (!(await exists('/dev/loop-control'))) {
      throw new StorageError(
        'missing_kernel_feature',
        'the kernel has no loop devices: /dev/loop-control is missing and `modprobe loop` did not load it (load the loop module, or give the pool a block device)',
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Mounts, loop devices and signatures

export interface MountInfo {
  source: string;
  fstype: string;
  fsroot: string;
}

/** What is mounted at `mountpoint` (the topmost mount), or null. */
export async function mountAt(mountpoint: string): Promise<MountInfo | null> {
  const res = await tryRun('findmnt', ['--json', '--nofsroot', '--output', 'SOURCE,FSTYPE,FSROOT', '--mountpoint', mountpoint]);
  if (!res) return null; // findmnt exits 1 when nothing is mounted there
  const parsed = JSON.parse(res.stdout) as { filesystems?: Array<Partial<MountInfo>> };
  const top = parsed.filesystems?.at(-1);
  if (!top) return null;
  return { source: top.source ?? '', fstype: top.fstype ?? '', fsroot: top.fsroot ?? '' };
}

/** Loop devices currently backed by `file`. */
export async function loopDevicesOf(file: string): Promise<string[]> {
  if (!(await exists(file))) return [];
  const res = await run('losetup', ['--list', '--noheadings', '--output', 'NAME', '--associated', file]);
  return res.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^\/dev\/loop\d+$/.test(l));
}

/** Attaches `file` to a loop device, reusing one that already backs it. */
export async function attachLoop(file: string): Promise<string> {
  try {
    const res = await run('losetup', ['--find', '--show', '--nooverlap', file]);
    return res.stdout.trim();
  } catch (err) {
    if (err instanceof CommandError && /could not find any free loop device|cannot find an unused loop device/i.test(err.stderr)) {
      throw new StorageError('missing_kernel_feature', `no free loop device for ${file}: ${err.stderr.trim()}`, { cause: err });
    }
    throw err;
  }
}

export async function detachLoop(device: string): Promise<void> {
  await run('losetup', ['--detach', device]);
}

/** The filesystem signature on a device or file: 'btrfs', another type, 'partition-table', or null when blank. */
export async function signatureOf(deviceOrFile: string): Promise<string | null> {
  try {
    const res = await run('blkid', ['--probe', '--output', 'export', deviceOrFile]);
    const fields = new Map(
      res.stdout
        .split('\n')
        .map((l) => l.split('='))
        .filter((kv): kv is [string, string] => kv.length >= 2)
        .map(([k, v]) => [k, v]),
    );
    return fields.get('TYPE') ?? (fields.has('PTTYPE') ? 'partition-table' : 'unknown');
  } catch (err) {
    if (err instanceof CommandError && err.exitCode === 2) return null; // blkid: nothing found
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Subvolumes

/** A btrfs subvolume's root directory is always inode 256 (BTRFS_FIRST_FREE_OBJECTID). */
export async function isSubvolume(path: string): Promise<boolean> {
  try {
    const st = await lstat(path);
    return st.isDirectory() && st.ino === 256;
  } catch {
    return false;
  }
}

export async function subvolumeCreate(path: string): Promise<void> {
  await run('btrfs', ['subvolume', 'create', path]);
}

export async function subvolumeSnapshot(source: string, dest: string): Promise<void> {
  await run('btrfs', ['subvolume', 'snapshot', source, dest]);
}

export async function setReadOnly(path: string, readOnly: boolean): Promise<void> {
  await run('btrfs', ['property', 'set', '-ts', path, 'ro', String(readOnly)]);
}

export async function isReadOnly(path: string): Promise<boolean> {
  return (await run('btrfs', ['property', 'get', '-ts', path, 'ro'])).stdout.trim() === 'ro=true';
}

/** The subvolume id of the subvolume that holds `path`. */
export async function subvolumeId(path: string): Promise<number> {
  const out = (await run('btrfs', ['inspect-internal', 'rootid', path])).stdout.trim();
  const id = Number(out);
  if (!Number.isSafeInteger(id) || id < 5) throw new StorageError('unexpected_output', `btrfs inspect-internal rootid ${path} printed ${JSON.stringify(out)}`);
  return id;
}

export interface SubvolumeEntry {
  id: number;
  /** The subvolume that contains this one ("top level"). */
  parentId: number;
  /** UUID of the subvolume this one was snapshotted from, or null. */
  parentUuid: string | null;
  uuid: string;
}

const LIST_LINE = /^ID (\d+) gen \d+ top level (\d+) parent_uuid (\S+)\s+uuid (\S+) path /;

/**
 * Ids of the pool's subvolumes by path (relative to the pool's top). A path shown twice (a name
 * with a newline in it can forge a line) is left out: its owner asks for its id alone.
 */
export async function subvolumeIdsByPath(mountpoint: string): Promise<Map<string, number>> {
  const res = await run('btrfs', ['subvolume', 'list', mountpoint]);
  const out = new Map<string, number>();
  const twice = new Set<string>();
  for (const line of res.stdout.split('\n')) {
    const m = /^ID (\d+) gen \d+ top level \d+ path (.+)$/.exec(line);
    if (!m) continue;
    const path = m[2]!;
    if (out.has(path)) twice.add(path);
    out.set(path, Number(m[1]));
  }
  for (const path of twice) out.delete(path);
  return out;
}

/**
 * Every subvolume in the pool by id. Paths are not used: a sliver may name a nested subvolume
 * with a newline and so forge a line; a forged line for an existing id then shows up as a
 * conflicting duplicate, which is refused rather than trusted.
 */
export async function listSubvolumes(mountpoint: string): Promise<Map<number, SubvolumeEntry>> {
  const res = await run('btrfs', ['subvolume', 'list', '-u', '-q', mountpoint]);
  const byId = new Map<number, SubvolumeEntry>();
  for (const line of res.stdout.split('\n')) {
    const m = LIST_LINE.exec(line);
    if (!m) continue; // the tail of a name with a newline in it
    const entry: SubvolumeEntry = {
      id: Number(m[1]),
      parentId: Number(m[2]),
      parentUuid: m[3] === '-' ? null : (m[3] ?? null),
      uuid: m[4] ?? '',
    };
    const seen = byId.get(entry.id);
    if (seen && (seen.parentId !== entry.parentId || seen.uuid !== entry.uuid || seen.parentUuid !== entry.parentUuid)) {
      throw new StorageError('ambiguous_subvolumes', `btrfs subvolume list shows subvolume ${entry.id} twice with different details (a forged name?); refusing to act on it`);
    }
    byId.set(entry.id, entry);
  }
  return byId;
}

/** Ids of the subvolumes nested (at any depth) in subvolume `rootId`, deepest first. */
export function nestedDeepestFirst(all: Map<number, SubvolumeEntry>, rootId: number): number[] {
  const depth = new Map<number, number>();
  const depthOf = (id: number, guard: number): number | null => {
    if (id === rootId) return 0;
    const known = depth.get(id);
    if (known !== undefined) return known;
    const entry = all.get(id);
    if (!entry || guard > all.size) return null;
    const up = depthOf(entry.parentId, guard + 1);
    if (up === null) return null;
    depth.set(id, up + 1);
    return up + 1;
  };
  const nested: Array<[number, number]> = [];
  for (const id of all.keys()) {
    if (id === rootId) continue;
    const d = depthOf(id, 0);
    if (d !== null) nested.push([id, d]);
  }
  return nested.sort((a, b) => b[1] - a[1] || b[0] - a[0]).map(([id]) => id);
}

/** Deletes one subvolume by id; a subvolume that is already gone is not an error. */
export async function deleteSubvolumeById(mountpoint: string, id: number, commit: boolean): Promise<boolean> {
  try {
    await run('btrfs', ['subvolume', 'delete', ...(commit ? ['--commit-after'] : []), '--subvolid', String(id), mountpoint]);
    return true;
  } catch (err) {
    if (err instanceof CommandError && /No such file or directory|not found|does not exist/i.test(err.stderr)) return false;
    throw err;
  }
}

/** Waits until the cleaner has dropped these deleted subvolumes (only pass ids that were deleted: it waits for live ones forever). */
export async function waitForCleaner(mountpoint: string, ids: readonly number[], timeoutMs = 120_000): Promise<void> {
  if (!ids.length) return;
  await run('btrfs', ['subvolume', 'sync', mountpoint, ...ids.map(String)], { timeoutMs });
}

// ---------------------------------------------------------------------------------------------
// Quotas (qgroups)

export async function quotasEnabled(mountpoint: string): Promise<boolean> {
  try {
    await run('btrfs', ['qgroup', 'show', mountpoint]);
    return true;
  } catch (err) {
    if (err instanceof CommandError && /quotas not enabled/i.test(err.stderr)) return false;
    throw err;
  }
}

/** Enables quotas and waits for the initial rescan (instant on an empty pool). */
export async function enableQuotas(mountpoint: string): Promise<void> {
  await run('btrfs', ['quota', 'enable', mountpoint]);
  await run('btrfs', ['quota', 'rescan', '-w', mountpoint]);
}

/** Sets the exclusive limit of the subvolume at path. By its qgroup id through the pool's top:
 * given the subvolume's own path, the ioctl's transaction is charged to that subvolume, and one
 * at its limit (a sliver that filled its disk) refused any new limit, even a higher one (EDQUOT). */
export async function limitExclusive(mountpoint: string, path: string, bytes: number | null): Promise<void> {
  const id = await subvolumeId(path);
  await run('btrfs', ['qgroup', 'limit', '-e', bytes === null ? 'none' : String(bytes), `0/${id}`, mountpoint]);
}

/** Sets the exclusive limit of a subvolume just made (a snapshot holding nothing of its own yet,
 * so nothing to refuse): through its own path, one command instead of two. */
export async function limitFreshExclusive(path: string, bytes: number): Promise<void> {
  await run('btrfs', ['qgroup', 'limit', '-e', String(bytes), path]);
}

/** Lifts the exclusive limit of qgroup 0/id; best effort (a missing qgroup has no limit to lift). */
export async function unlimitQgroup(mountpoint: string, id: number): Promise<void> {
  await tryRun('btrfs', ['qgroup', 'limit', '-e', 'none', `0/${id}`, mountpoint]);
}

/** Destroys qgroup 0/id; one already gone (newer kernels drop it with the subvolume) is fine. */
export async function destroyQgroup(mountpoint: string, id: number): Promise<void> {
  try {
    await run('btrfs', ['qgroup', 'destroy', `0/${id}`, mountpoint]);
  } catch (err) {
    if (err instanceof CommandError && /No such file or directory/i.test(err.stderr)) return;
    throw err;
  }
}

/** Removes qgroups whose subvolume is gone (left by an interrupted deletion); best effort. */
export async function clearStaleQgroups(mountpoint: string): Promise<void> {
  await tryRun('btrfs', ['qgroup', 'clear-stale', mountpoint]);
}

export interface QgroupUsage {
  referenced: number;
  exclusive: number;
}

/** One subvolume's qgroup row. Text output: btrfs-progs 6.2 aborts printing JSON once a limit is set. */
async function showQgroup(path: string, id: number): Promise<{ usage: QgroupUsage | null; inconsistent: boolean }> {
  // --sync commits the transaction first: qgroup numbers are only updated at commit. -f keeps
  // to the qgroups of this path, so the only name printed is the root's own (no forged rows).
  const res = await run('btrfs', ['qgroup', 'show', '--sync', '--raw', '-f', path]);
  const inconsistent = /inconsistent|rescan/i.test(res.stderr);
  const rows = res.stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((cols) => cols[0] === `0/${id}`);
  const row = rows[0];
  if (!row) return { usage: null, inconsistent };
  if (rows.length > 1) throw new StorageError('ambiguous_subvolumes', `btrfs qgroup show lists qgroup 0/${id} more than once`);
  const referenced = Number(row[1]);
  const exclusive = Number(row[2]);
  if (!Number.isSafeInteger(referenced) || !Number.isSafeInteger(exclusive)) {
    throw new StorageError('unexpected_output', `btrfs qgroup show printed an unexpected row for 0/${id}: ${row.join(' ')}`);
  }
  return { usage: { referenced, exclusive }, inconsistent };
}

/**
 * Every level-0 qgroup of the pool by subvolume id, in one command (accounting). A row that shows
 * up twice (a forged subvolume name with a newline) is left out rather than trusted.
 */
export async function qgroupRows(mountpoint: string): Promise<Map<number, QgroupUsage>> {
  const res = await run('btrfs', ['qgroup', 'show', '--sync', '--raw', mountpoint]);
  const rows = new Map<number, QgroupUsage>();
  const twice = new Set<number>();
  for (const line of res.stdout.split('\n')) {
    const cols = line.trim().split(/\s+/);
    const m = /^0\/(\d+)$/.exec(cols[0] ?? '');
    const referenced = Number(cols[1]);
    const exclusive = Number(cols[2]);
    if (!m || !Number.isSafeInteger(referenced) || !Number.isSafeInteger(exclusive)) continue;
    const id = Number(m[1]);
    if (rows.has(id)) twice.add(id);
    rows.set(id, { referenced, exclusive });
  }
  for (const id of twice) rows.delete(id);
  return rows;
}

/**
 * The referenced and exclusive bytes of the subvolume at `path`. When btrfs says its
 * accounting is inconsistent (it can after some deletions), rescans and reads again.
 */
export async function qgroupUsage(mountpoint: string, path: string): Promise<QgroupUsage | null> {
  const id = await subvolumeId(path);
  let shown = await showQgroup(path, id);
  if (shown.inconsistent) {
    await run('btrfs', ['quota', 'rescan', '-w', mountpoint]);
    shown = await showQgroup(path, id);
  }
  return shown.usage;
}

// ---------------------------------------------------------------------------------------------
// Serialising work on one image or one root

/** Runs tasks one after another per key; different keys run concurrently. */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<unknown>>();

  async with<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#tails.get(key) ?? Promise.resolve();
    const task = before.then(fn, fn);
    const tail = task.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    try {
      return await task;
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}
