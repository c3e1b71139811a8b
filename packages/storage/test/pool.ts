// A throwaway btrfs pool on a sparse loop file in a temp dir, for the storage tests; cleanup()
// leaves no mount, loop device or temp dir behind even when a test failed half-way.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, tryRun } from '@planetlite/host';
import { BtrfsDriver } from '../src/btrfs/driver.js';

export interface TestPool {
  dir: string;
  file: string;
  mountpoint: string;
  driver: BtrfsDriver;
  cleanup(): Promise<void>;
}

export async function makeTestPool(size = '1G'): Promise<TestPool> {
  const dir = await mkdtemp(join(tmpdir(), 'planetlite-storage-'));
  const file = join(dir, 'pool.img');
  const mountpoint = join(dir, 'mnt');
  const driver = new BtrfsDriver({ pool: file, size, mountpoint });
  const cleanup = async (): Promise<void> => {
    try {
      await driver.destroy();
    } finally {
      // Belt and braces for a failed destroy(): lazy unmount, detach, remove.
      await tryRun('umount', ['--lazy', mountpoint]);
      const loops = await tryRun('losetup', ['--list', '--noheadings', '--output', 'NAME', '--associated', file]);
      for (const dev of loops?.stdout.split('\n').filter(Boolean) ?? []) await tryRun('losetup', ['--detach', dev.trim()]);
      await rm(dir, { recursive: true, force: true });
    }
  };
  return { dir, file, mountpoint, driver, cleanup };
}

/** Mount lines (from /proc/mounts) for this mountpoint. */
export async function mountsAt(mountpoint: string): Promise<string[]> {
  return (await readFile('/proc/mounts', 'utf8')).split('\n').filter((l) => l.split(' ')[1] === mountpoint);
}

/** Loop devices backed by this file. */
export async function loopsOf(file: string): Promise<string[]> {
  const res = await run('losetup', ['--list', '--noheadings', '--output', 'NAME', '--associated', file]);
  return res.stdout.split('\n').filter(Boolean);
}

/** Subvolume ids and paths, as `btrfs subvolume list` shows them. */
export async function subvolumes(mountpoint: string): Promise<Array<{ id: number; path: string }>> {
  const res = await run('btrfs', ['subvolume', 'list', mountpoint]);
  return res.stdout
    .split('\n')
    .map((l) => /^ID (\d+) .* path (.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ id: Number(m[1]), path: m[2] ?? '' }));
}

/** Ids of the qgroups 0/<id> the pool has. */
export async function qgroupIds(mountpoint: string): Promise<number[]> {
  // Text, not JSON: btrfs-progs 6.2 aborts printing JSON once a qgroup has a limit.
  const res = await run('btrfs', ['qgroup', 'show', '--sync', '--raw', mountpoint]);
  return res.stdout
    .split('\n')
    .map((l) => /^0\/(\d+)\s/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
}

/**
 * Opens the pool and imports a small test image into it: /etc/hostname and an 8 MiB random
 * /var/big.bin that every root made from it shares. Answers the image's sha256.
 */
export async function importTestImage(pool: TestPool, opts: { zstd?: boolean } = {}): Promise<string> {
  const rootfs = join(pool.dir, 'rootfs');
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await mkdir(join(rootfs, 'var'), { recursive: true });
  await writeFile(join(rootfs, 'etc/hostname'), 'sliver\n');
  await run('dd', ['if=/dev/urandom', `of=${join(rootfs, 'var/big.bin')}`, 'bs=1M', 'count=8', 'conv=fsync', 'status=none']);
  const archive = join(pool.dir, opts.zstd ? 'rootfs.tar.zst' : 'rootfs.tar');
  await run('tar', ['--create', ...(opts.zstd ? ['--zstd'] : []), '--file', archive, '--numeric-owner', '--directory', rootfs, '.']);
  const sha = createHash('sha256').update(await readFile(archive)).digest('hex');
  await pool.driver.open();
  await pool.driver.importImage(sha, archive);
  return sha;
}
