// A pool on a block device (a loop device this test attaches stands in for a disk): a blank
// device is formatted, another filesystem is refused, and the device itself is never removed.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, tryRun } from '@planetlite/host';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountsAt } from '../test/pool.js';
import { BtrfsDriver } from './btrfs/driver.js';
import { isStorageError } from './index.js';

let dir = '';
let disk = '';
let device = '';
let driver: BtrfsDriver;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'planetlite-storage-'));
  disk = join(dir, 'disk.img');
  await run('truncate', ['--size', '256M', disk]);
  device = (await run('losetup', ['--find', '--show', disk])).stdout.trim();
  driver = new BtrfsDriver({ pool: device, mountpoint: join(dir, 'mnt') });
});

afterAll(async () => {
  await tryRun('umount', ['--lazy', join(dir, 'mnt')]);
  if (device) await tryRun('losetup', ['--detach', device]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('btrfs storage pool on a block device', () => {
  it('refuses a device that holds another filesystem, and mounts nothing', async () => {
    await run('mkfs.ext4', ['-q', device]);
    const err = await driver.open().catch((e: unknown) => e);
    expect(isStorageError(err, 'pool_mismatch')).toBe(true);
    expect((err as Error).message).toMatch(/ext4/);
    expect(await mountsAt(driver.mountpoint)).toEqual([]);
  });

  it('formats a blank device, mounts it idempotently, and close()/destroy() leave the device alone', async () => {
    await run('wipefs', ['--all', '--quiet', device]);
    await driver.open();
    await driver.open();
    expect(await mountsAt(driver.mountpoint)).toHaveLength(1);
    expect((await run('blkid', ['--probe', '--output', 'value', '--match-tag', 'TYPE', device])).stdout.trim()).toBe('btrfs');
    expect(await driver.listImages()).toEqual([]);
    await driver.close();
    expect(await mountsAt(driver.mountpoint)).toEqual([]);
    await driver.open(); // an existing btrfs is mounted, not reformatted
    await driver.destroy();
    expect(await mountsAt(driver.mountpoint)).toEqual([]);
    expect((await run('losetup', ['--list', '--noheadings', '--output', 'NAME', '--associated', disk])).stdout.trim()).toBe(device);
    expect((await stat(disk)).size).toBe(256 * 2 ** 20);
  });
});
