// Images and sliver roots in the btrfs pool: images/<sha256> are read-only subvolumes,
// slivers/<id> writable snapshots of one of them with an exclusive-bytes qgroup limit.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, chown, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, Reverter, run } from '@planetlite/host';
import { StorageError } from '../errors.js';
import { checkArchive } from './archive.js';
import { isMountPoint, LAYERS_FILE, mountLayers, mountPoints, readLayers, unmountLayers, writeLayers, type Layers } from './layers.js';
import { isSha256, isSliverId } from '../ids.js';
import {
  deleteSubvolumeById,
  destroyQgroup,
  isSubvolume,
  limitExclusive,
  limitFreshExclusive,
  listSubvolumes,
  nestedDeepestFirst,
  qgroupRows,
  qgroupUsage,
  requireTools,
  setReadOnly,
  subvolumeCreate,
  subvolumeId,
  subvolumeIdsByPath,
  subvolumeSnapshot,
  unlimitQgroup,
  waitForCleaner,
} from './utils.js';

/** Folders at the top of the pool. */
export const IMAGES = 'images';
export const SLIVERS = 'slivers';
/**
 * A subvolume still being built is `<name>.<pid>.partial`: the pid of the process building it,
 * so that a sweep (open() in another process, such as `planetlite-agent image import` next to
 * the running agent) deletes only the leftovers of processes that are gone.
 */
const PARTIAL = /^(.+?)(?:\.(\d+))?\.partial$/;
/** Extracting a large root filesystem can take a while. */
const EXTRACT_TIMEOUT_MS = 30 * 60_000;

export function imagePath(mountpoint: string, sha256: string): string {
  return join(mountpoint, IMAGES, sha256);
}

/** The sliver's subvolume: its whole root when a snapshot, its layers when layered. */
export function rootPath(mountpoint: string, sliverId: string): string {
  return join(mountpoint, SLIVERS, sliverId);
}

/** The root filesystem a sliver sees: the snapshot itself, or a layered root's overlay mount. */
export function rootfsPath(mountpoint: string, sliverId: string): string {
  const sub = rootPath(mountpoint, sliverId);
  return existsSync(join(sub, LAYERS_FILE)) ? join(sub, 'rootfs') : sub;
}

/**
 * Deletes the subvolume at `path` with every subvolume nested in it (deepest first, by id so a
 * path a sliver controls is never followed), waits for the cleaner, and destroys their qgroups.
 */
export async function deleteSubvolumeTree(mountpoint: string, path: string): Promise<void> {
  if (!(await isSubvolume(path))) return;
  const rootId = await subvolumeId(path);
  // A root at its limit cannot even unlink a nested subvolume's entry (EDQUOT): lift it first.
  await unlimitQgroup(mountpoint, rootId);
  const deleted: number[] = [];
  // Most roots hold no subvolume of their own: delete at once, and list the pool's subvolumes
  // (a listing that grows with the node) only when btrfs refuses because some are nested.
  const alone = await deleteSubvolumeById(mountpoint, rootId, true).catch((err: unknown) => {
    if (err instanceof CommandError && /Directory not empty/i.test(err.stderr)) return null;
    throw err;
  });
  if (alone !== null) {
    if (alone) deleted.push(rootId);
  } else {
    for (const id of nestedDeepestFirst(await listSubvolumes(mountpoint), rootId)) {
      if (await deleteSubvolumeById(mountpoint, id, false)) deleted.push(id);
    }
    if (await deleteSubvolumeById(mountpoint, rootId, true)) deleted.push(rootId);
  }
  await waitForCleaner(mountpoint, deleted);
  for (const id of deleted) await destroyQgroup(mountpoint, id);
}

function partialOf(path: string): string {
  return `${path}.${process.pid}.partial`;
}

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes the *.partial leftovers in images/ and slivers/ (only those for `name` when given)
 * whose building process is gone. Returns the paths it removed.
 */
export async function sweepLeftovers(mountpoint: string, name?: string): Promise<string[]> {
  const removed: string[] = [];
  for (const folder of [IMAGES, SLIVERS]) {
    let entries: string[];
    try {
      entries = await readdir(join(mountpoint, folder));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    for (const entry of entries) {
      const m = PARTIAL.exec(entry);
      if (!m || (name !== undefined && m[1] !== name)) continue;
      if (m[2] !== undefined && processIsAlive(Number(m[2]))) continue; // still being built
      const path = join(mountpoint, folder, entry);
      if (await isSubvolume(path)) await deleteSubvolumeTree(mountpoint, path);
      else await rm(path, { recursive: true, force: true });
      removed.push(path);
    }
  }
  return removed;
}

/**
 * Publishes a finished partial under its final name. If another process published the same
 * name first, ours is dropped and theirs kept (the same sha256 means the same image).
 */
async function publish(mountpoint: string, partial: string, final: string): Promise<boolean> {
  try {
    await rename(partial, final);
    return true;
  } catch (err) {
    if (!(await isSubvolume(final))) throw err;
    await deleteSubvolumeTree(mountpoint, partial);
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Images

type Compression = { flag: string; tool: string } | null;

/** The archive's compression, from its first bytes (tar itself is given the matching flag). */
async function compressionOf(archive: string): Promise<Compression> {
  let head: Buffer;
  try {
    const fh = await open(archive, 'r');
    try {
      head = Buffer.alloc(6);
      const { bytesRead } = await fh.read(head, 0, 6, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new StorageError('archive_unreadable', `cannot read the image archive ${archive}: ${(err as Error).message}`, { cause: err });
  }
  if (head[0] === 0x1f && head[1] === 0x8b) return { flag: '--gzip', tool: 'gzip' };
  if (head.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return { flag: '--xz', tool: 'xz' };
  if (head.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return { flag: '--zstd', tool: 'zstd' };
  return null;
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function hasImage(mountpoint: string, sha256: string): Promise<boolean> {
  return isSubvolume(imagePath(mountpoint, sha256));
}

export async function listImages(mountpoint: string): Promise<string[]> {
  return (await readdir(join(mountpoint, IMAGES))).filter(isSha256).sort();
}

export async function importImage(mountpoint: string, sha256: string, archive: string): Promise<void> {
  const final = imagePath(mountpoint, sha256);
  if (await isSubvolume(final)) return;
  const compression = await compressionOf(archive);
  if (compression) await requireTools([compression.tool], `importing a ${compression.flag.slice(2)}-compressed image`);
  const actual = await sha256OfFile(archive);
  if (actual !== sha256) {
    throw new StorageError('image_checksum_mismatch', `image archive ${archive} has sha256 ${actual}, not the expected ${sha256}; refusing it`);
  }
  await checkArchive(archive, compression?.flag ?? null, EXTRACT_TIMEOUT_MS);
  await sweepLeftovers(mountpoint, sha256); // an earlier import that was interrupted
  const partial = partialOf(final);
  await deleteSubvolumeTree(mountpoint, partial); // ours, from a failed undo in this process
  await Reverter.wrap(async (r) => {
    await subvolumeCreate(partial);
    r.add(() => deleteSubvolumeTree(mountpoint, partial));
    // As root: owners by number (never through this host's /etc/passwd), modes incl. setuid,
    // and xattrs such as security.capability.
    await run(
      'tar',
      [
        '--extract',
        '--file',
        archive,
        ...(compression ? [compression.flag] : []),
        '--directory',
        partial,
        '--numeric-owner',
        '--same-owner',
        '--same-permissions',
        '--xattrs',
        '--xattrs-include=*',
      ],
      { timeoutMs: EXTRACT_TIMEOUT_MS },
    );
    // Data on disk before the name says the image is complete.
    await run('btrfs', ['filesystem', 'sync', partial]);
    await setReadOnly(partial, true);
    await publish(mountpoint, partial, final);
  });
}

/** Slivers whose root was snapshotted from this image (their parent UUID is the image's UUID),
 * or that have it as their lower layer. */
async function rootsMadeFrom(mountpoint: string, sha256: string): Promise<string[]> {
  const all = await listSubvolumes(mountpoint);
  const image = all.get(await subvolumeId(imagePath(mountpoint, sha256)));
  if (!image) return [];
  const users: string[] = [];
  for (const sliver of await listRoots(mountpoint)) {
    const sub = rootPath(mountpoint, sliver);
    const layers = await readLayers(sub).catch(() => null);
    if (layers ? layers.image === sha256 : all.get(await subvolumeId(sub))?.parentUuid === image.uuid) users.push(sliver);
  }
  return users;
}

export async function deleteImage(mountpoint: string, sha256: string): Promise<void> {
  const path = imagePath(mountpoint, sha256);
  await sweepLeftovers(mountpoint, sha256);
  if (!(await isSubvolume(path))) return;
  // Deleting the base would turn every byte a root shares with it into the root's own
  // exclusive bytes, pushing it over its quota at once: refuse while roots use it.
  const users = await rootsMadeFrom(mountpoint, sha256);
  if (users.length) {
    throw new StorageError('image_in_use', `image ${sha256} is the base of ${users.length} sliver root(s) (${users.join(', ')}); delete them first`);
  }
  await deleteSubvolumeTree(mountpoint, path);
}

// ---------------------------------------------------------------------------------------------
// Sliver roots

export async function listRoots(mountpoint: string): Promise<string[]> {
  return (await readdir(join(mountpoint, SLIVERS))).filter(isSliverId).sort();
}

/**
 * A sliver's root: a snapshot of the image, or (with `layered`) a subvolume holding the upper
 * layer of an overlay over the image idmapped to the sliver's host ids (layers.ts). Returns the
 * root filesystem's path. An existing root keeps its kind and contents, gets the new limit, and
 * is mounted again if layered and not mounted (after a reboot, say).
 */
export async function createRoot(mountpoint: string, sliverId: string, sha256: string, quotaBytes: number, layered: { idmapBase: number } | null = null, took: Record<string, number> = {}): Promise<string> {
  let t0 = performance.now();
  const lap = (part: string) => {
    const now = performance.now();
    took[part] = Math.round(now - t0);
    t0 = now;
  };
  const root = rootPath(mountpoint, sliverId);
  if (await isSubvolume(root)) {
    await limitExclusive(mountpoint, root, quotaBytes);
    lap('quota');
    const path = await ensureMounted(mountpoint, sliverId);
    lap('mount');
    return path;
  }
  const image = imagePath(mountpoint, sha256);
  if (!(await isSubvolume(image))) throw new StorageError('image_not_found', `image ${sha256} is not in the storage pool; import it first`);
  await sweepLeftovers(mountpoint, sliverId);
  const partial = partialOf(root);
  await deleteSubvolumeTree(mountpoint, partial);
  lap('sweep');
  await Reverter.wrap(async (r) => {
    if (layered) {
      await subvolumeCreate(partial);
      r.add(() => deleteSubvolumeTree(mountpoint, partial));
      lap('subvolume');
      await prepareLayers(partial, image, { image: sha256, idmapBase: layered.idmapBase });
      lap('layers');
    } else {
      await subvolumeSnapshot(image, partial);
      r.add(() => deleteSubvolumeTree(mountpoint, partial));
      lap('snapshot');
    }
    // The limit is set before the root gets its name, so no root is ever seen without one.
    await limitFreshExclusive(partial, quotaBytes);
    lap('quota');
    if (!(await publish(mountpoint, partial, root))) await limitExclusive(mountpoint, root, quotaBytes);
    lap('publish');
  });
  const path = await ensureMounted(mountpoint, sliverId);
  lap('mount');
  return path;
}

/** A layered root's folders: the upper layer's top owned and moded as the image's top, seen
 * through the sliver's ids (it is the top the sliver sees). */
async function prepareLayers(dir: string, image: string, layers: Layers): Promise<void> {
  const top = await stat(image);
  for (const name of ['upper', 'work', 'lower', 'rootfs']) await mkdir(join(dir, name));
  await chown(join(dir, 'upper'), layers.idmapBase + top.uid, layers.idmapBase + top.gid);
  await chmod(join(dir, 'upper'), top.mode & 0o7777);
  await writeLayers(dir, layers);
}

/** The root filesystem's path, with a layered root's overlay mounted. */
async function ensureMounted(mountpoint: string, sliverId: string, mounted?: ReadonlySet<string>): Promise<string> {
  const sub = rootPath(mountpoint, sliverId);
  const layers = await readLayers(sub);
  if (!layers) return sub;
  const rootfs = join(sub, 'rootfs');
  if (mounted ? mounted.has(rootfs) : await isMountPoint(rootfs)) return rootfs;
  const image = imagePath(mountpoint, layers.image);
  if (!(await isSubvolume(image))) throw new StorageError('image_not_found', `image ${layers.image}, the lower layer of sliver ${sliverId}'s root, is not in the storage pool; import it again`);
  // A crash between attaching the idmapped image and detaching it leaves lower/ mounted.
  await unmountLayers(sub, mounted);
  await mountLayers(sub, image, layers);
  return rootfs;
}

/** Mounts every layered root that is not (after a reboot, or the pool mounted again). Returns
 * those that could not be, with why; they are mounted again when their sliver is next built. */
export async function mountAllLayers(mountpoint: string): Promise<Array<{ sliver: string; error: string }>> {
  const points = await mountPoints();
  const failed: Array<{ sliver: string; error: string }> = [];
  for (const sliver of await listRoots(mountpoint)) {
    await ensureMounted(mountpoint, sliver, points).catch((err: unknown) => failed.push({ sliver, error: (err as Error).message }));
  }
  return failed;
}

/** Unmounts every layered root (before the pool itself is unmounted). */
export async function unmountAllLayers(mountpoint: string): Promise<void> {
  const points = await mountPoints();
  const prefix = join(mountpoint, SLIVERS) + '/';
  for (const p of points) {
    if (p.startsWith(prefix) && (p.endsWith('/rootfs') || p.endsWith('/lower'))) {
      try {
        await run('umount', [p]);
      } catch (err) {
        throw new StorageError('pool_busy', `cannot unmount the sliver root ${p}: it is busy (a sliver still running?)`, { cause: err });
      }
    }
  }
}

export async function deleteRoot(mountpoint: string, sliverId: string): Promise<void> {
  const root = rootPath(mountpoint, sliverId);
  await sweepLeftovers(mountpoint, sliverId);
  await unmountLayers(root);
  await deleteSubvolumeTree(mountpoint, root);
}

export async function usage(mountpoint: string, sliverId: string): Promise<{ exclusiveBytes: number; referencedBytes: number } | null> {
  const root = rootPath(mountpoint, sliverId);
  if (!(await isSubvolume(root))) return null;
  const u = await qgroupUsage(mountpoint, root);
  if (!u) throw new StorageError('quota_missing', `btrfs has no qgroup for the root of sliver ${sliverId} (are quotas enabled on ${mountpoint}?)`);
  return { exclusiveBytes: u.exclusive, referencedBytes: u.referenced };
}

/**
 * Usage of every given root from one qgroup listing. Subvolume ids are looked up once per root
 * and kept in `ids` (a root keeps its id until it is deleted), so a steady node pays one command.
 */
export async function rootsUsage(mountpoint: string, roots: string[], ids: Map<string, number>): Promise<Map<string, { exclusiveBytes: number; referencedBytes: number }>> {
  const rows = await qgroupRows(mountpoint);
  const out = new Map<string, { exclusiveBytes: number; referencedBytes: number }>();
  // Many roots new since the last read (a burst): their ids from one listing, not a command each.
  const unknown = roots.filter((sliver) => !rows.has(ids.get(sliver) ?? -1));
  const listed = unknown.length > 8 ? await subvolumeIdsByPath(mountpoint).catch(() => new Map<string, number>()) : new Map<string, number>();
  for (const sliver of roots) {
    let id = ids.get(sliver);
    if (id === undefined || !rows.has(id)) {
      id = listed.get(`${SLIVERS}/${sliver}`) ?? (await subvolumeId(rootPath(mountpoint, sliver)).catch(() => undefined));
      if (id === undefined) continue;
      ids.set(sliver, id);
    }
    const u = rows.get(id);
    if (u) out.set(sliver, { exclusiveBytes: u.exclusive, referencedBytes: u.referenced });
  }
  const present = new Set(roots);
  for (const sliver of ids.keys()) if (!present.has(sliver)) ids.delete(sliver);
  return out;
}
