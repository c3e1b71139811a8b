// A throwaway btrfs pool on a sparse loop file in a temp dir, for the storage tests; cleanup()
// leaves no mount, loop device or temp dir behind even when a test failed half-way.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
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
