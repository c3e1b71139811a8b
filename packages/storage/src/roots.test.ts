// Sliver roots on a real btrfs pool: writable snapshots, the exclusive-bytes quota, usage and
// recursive deletion.
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, run } from '@planetlite/host';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importTestImage, makeTestPool, qgroupIds, subvolumes, type TestPool } from '../test/pool.js';
import { isStorageError } from './index.js';

const MiB = 2 ** 20;
const A = '0f8fad5b-d9cb-469f-a165-70867728950e';
const B = '7c9e6679-7425-40de-944b-e07fc1f90ae7';
const C = '16fd2706-8baf-433b-82eb-8c7fada847da';

let pool: TestPool;
let sha = '';

/** dd through run(): the way a sliver's write reaches the disk, including its errors. */
const dd = (to: string, mib: number, from = '/dev/zero') =>
  run('dd', [`if=${from}`, `of=${to}`, 'bs=1M', `count=${mib}`, 'conv=fsync', 'status=none']);

beforeAll(async () => {
  pool = await makeTestPool('1G');
  sha = await importTestImage(pool, { zstd: true });
});

afterAll(async () => {
  await pool?.cleanup();
});

describe('btrfs sliver roots', () => {
  it('createRoot gives a writable copy while the image stays read-only and unchanged', async () => {
    const root = await pool.driver.createRoot(A, sha, 4 * MiB);
    expect(root).toBe(pool.driver.rootPath(A));
    expect(root).toBe(join(pool.mountpoint, 'slivers', A));
    expect(await pool.driver.listRoots()).toEqual([A]);
    expect((await run('btrfs', ['property', 'get', '-ts', root, 'ro'])).stdout.trim()).toBe('ro=false');
    await writeFile(join(root, 'etc/hostname'), 'changed\n');
    await writeFile(join(root, 'etc/new'), 'new\n');
    const img = pool.driver.imagePath(sha);
    expect(await readFile(join(img, 'etc/hostname'), 'utf8')).toBe('sliver\n');
    await expect(stat(join(img, 'etc/new'))).rejects.toThrow(/ENOENT/);
    expect((await run('btrfs', ['property', 'get', '-ts', img, 'ro'])).stdout.trim()).toBe('ro=true');
    // Idempotent: the existing root and what the sliver wrote are kept.
    expect(await pool.driver.createRoot(A, sha, 4 * MiB)).toBe(root);
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('changed\n');
    expect(await pool.driver.listRoots()).toEqual([A]);
    // A root needs an imported image.
    const missing = createHash('sha256').update('no such image').digest('hex');
    await expect(pool.driver.createRoot(B, missing, MiB)).rejects.toSatisfy((e) => isStorageError(e, 'image_not_found'));
    await expect(pool.driver.createRoot(B, sha, 0)).rejects.toSatisfy((e) => isStorageError(e, 'invalid_options'));
    expect(await pool.driver.listRoots()).toEqual([A]);
  });

  it('the quota limits what a sliver adds (EDQUOT past it), not the image bytes it shares', async () => {
    const root = pool.driver.rootPath(A);
    const before = await pool.driver.usage(A);
    expect(before!.referencedBytes).toBeGreaterThanOrEqual(8 * MiB); // sees the 8 MiB image file…
    expect(before!.exclusiveBytes).toBeLessThan(MiB); // …which is not its own
    await dd(join(root, 'var/two'), 2, '/dev/urandom'); // within 4 MiB
    const err = await dd(join(root, 'var/eight'), 8).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).stderr).toMatch(/Disk quota exceeded/);
    const after = await pool.driver.usage(A);
    expect(after!.exclusiveBytes).toBeGreaterThan(2 * MiB);
    expect(after!.exclusiveBytes).toBeLessThanOrEqual(4 * MiB + 256 * 1024);
    // Rewriting a shared image file makes it the sliver's own: 8 MiB does not fit in 4 MiB.
    const rewrite = await dd(join(root, 'var/big.bin'), 8).catch((e: unknown) => e);
    expect((rewrite as CommandError).stderr).toMatch(/Disk quota exceeded/);
    // createRoot on an existing root sets the new limit: now 8 more MiB fit.
    await pool.driver.createRoot(A, sha, 16 * MiB);
    await dd(join(root, 'var/eight'), 8);
    // A root at its limit (its sliver filled its disk) still takes its limit again, or another:
    // every pass of the agent sets it, and a refusal there failed the sliver's every change.
    const full = await dd(join(root, 'var/more'), 16).catch((e: unknown) => e);
    expect((full as CommandError).stderr).toMatch(/Disk quota exceeded/);
    await run('btrfs', ['filesystem', 'sync', root]);
    await pool.driver.createRoot(A, sha, 16 * MiB);
    await pool.driver.createRoot(A, sha, 20 * MiB);
    await dd(join(root, 'var/four'), 2);
  });

  it('usage() reports exclusive bytes growing after a write, and null for no root', async () => {
    await pool.driver.createRoot(B, sha, 64 * MiB);
    const u0 = await pool.driver.usage(B);
    await dd(join(pool.driver.rootPath(B), 'data'), 3, '/dev/urandom');
    const u1 = await pool.driver.usage(B);
    expect(u1!.exclusiveBytes - u0!.exclusiveBytes).toBeGreaterThanOrEqual(3 * MiB);
    expect(u1!.referencedBytes - u0!.referencedBytes).toBeGreaterThanOrEqual(3 * MiB);
    expect(await pool.driver.usage(C)).toBeNull();
    // usageAll() agrees with usage() for every root, and names no sliver without one.
    const all = await pool.driver.usageAll();
    expect(all.get(B)).toEqual(await pool.driver.usage(B));
    expect(all.get(A)).toEqual(await pool.driver.usage(A));
    expect(all.has(C)).toBe(false);
  });

  it('usageAll() of many roots new at once (one listing for their ids) agrees with usage() for each', async () => {
    const many = Array.from({ length: 10 }, (_, i) => `5e1f0c3a-0000-4000-8000-${String(i).padStart(12, '0')}`);
    for (const id of many) await pool.driver.createRoot(id, sha, 16 * MiB);
    await dd(join(pool.driver.rootPath(many[3]!), 'data'), 2, '/dev/urandom');
    const all = await pool.driver.usageAll();
    for (const id of [A, B, ...many]) expect(all.get(id)).toEqual(await pool.driver.usage(id));
    expect(all.get(many[3]!)!.exclusiveBytes).toBeGreaterThanOrEqual(2 * MiB);
    for (const id of many) await pool.driver.deleteRoot(id);
    expect([...(await pool.driver.usageAll()).keys()].filter((id) => many.includes(id))).toEqual([]);
  });

  it('deleteImage refuses while a root made from the image exists', async () => {
    const err = await pool.driver.deleteImage(sha).catch((e: unknown) => e);
    expect(isStorageError(err, 'image_in_use')).toBe(true);
    expect((err as Error).message).toContain(A);
    expect(await pool.driver.hasImage(sha)).toBe(true);
  });

  it('deleteRoot removes nested subvolumes and their qgroups, even from a root at its quota', async () => {
    const root = await pool.driver.createRoot(C, sha, 4 * MiB);
    // What a sliver may do: subvolumes inside subvolumes, a read-only snapshot, then a full disk.
    await mkdir(join(root, 'srv'));
    await run('btrfs', ['subvolume', 'create', join(root, 'srv/vol')]);
    await run('btrfs', ['subvolume', 'create', join(root, 'srv/vol/inner')]);
    await writeFile(join(root, 'srv/vol/inner/file'), 'x'.repeat(100_000));
    await run('btrfs', ['subvolume', 'snapshot', '-r', join(root, 'srv/vol'), join(root, 'snap-ro')]);
    await expect(dd(join(root, 'fill'), 8)).rejects.toThrow(/Disk quota exceeded/);
    const ids = (await subvolumes(pool.mountpoint)).filter((s) => s.path.startsWith(`slivers/${C}`)).map((s) => s.id);
    expect(ids).toHaveLength(4);
    expect(await qgroupIds(pool.mountpoint)).toEqual(expect.arrayContaining(ids));

    await pool.driver.deleteRoot(C);
    await expect(stat(root)).rejects.toThrow(/ENOENT/);
    expect(await pool.driver.listRoots()).toEqual([A, B]);
    expect((await subvolumes(pool.mountpoint)).filter((s) => s.path.startsWith('slivers/' + C))).toEqual([]);
    const left = await qgroupIds(pool.mountpoint);
    for (const id of ids) expect(left).not.toContain(id);
    await pool.driver.deleteRoot(C); // idempotent
  });

  it('after the last root is gone the image can be deleted, leaving an empty pool', async () => {
    await pool.driver.deleteRoot(A);
    await pool.driver.deleteRoot(B);
    expect(await pool.driver.listRoots()).toEqual([]);
    await pool.driver.deleteImage(sha);
    expect(await pool.driver.listImages()).toEqual([]);
    expect(await subvolumes(pool.mountpoint)).toEqual([]);
    expect(await qgroupIds(pool.mountpoint)).toEqual([5]);
  });
});
