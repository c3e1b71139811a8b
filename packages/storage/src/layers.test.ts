// Layered sliver roots on a real btrfs pool: an overlay over the image idmapped to the sliver's
// ids, its page cache shared with the image, its quota, mounts made again after close/open, and
// nothing left mounted once deleted.
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, run } from '@planetlite/host';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { importTestImage, makeTestPool, type TestPool } from '../test/pool.js';
import { BtrfsDriver, isStorageError } from './index.js';

const MiB = 2 ** 20;
const A = '3b241101-e2bb-4255-8caf-4136c566a962';
const B = '9c858901-8a57-4791-81fe-4c455b099bc9';
const S = 'a2c4e6f8-1234-4abc-9def-0123456789ab';
const H = 3_000_000_000;
const H2 = H + 65_536;

let pool: TestPool;
let sha = '';

const dd = (to: string, mib: number, from = '/dev/zero') => run('dd', [`if=${from}`, `of=${to}`, 'bs=1M', `count=${mib}`, 'conv=fsync', 'status=none']);
/** Pages of a file in the page cache (util-linux fincore), and a way to drop them. */
const resident = async (file: string) => Number((await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', file])).stdout.trim());
const dropCache = (file: string) => run('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
const mountsUnder = async (dir: string) => (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '').filter((p) => p.startsWith(dir + '/'));

beforeAll(async () => {
  pool = await makeTestPool('1G');
  sha = await importTestImage(pool);
});

afterAll(async () => {
  await pool?.cleanup();
});

describe('layered sliver roots', () => {
  it('a layered root is the image seen in the sliver\'s host ids, with writes of its own', async () => {
    expect(pool.driver.capabilities.layers).toBe(true);
    const root = await pool.driver.createRoot(A, sha, 4 * MiB, { layered: { idmapBase: H } });
    expect(root).toBe(join(pool.mountpoint, 'slivers', A, 'rootfs'));
    expect(pool.driver.rootPath(A)).toBe(root);
    expect(await pool.driver.rootIdShift(A)).toBe(H);
    // The image's files are uid/gid 0 on disk; through the root they are the sliver's root.
    const seen = await stat(join(root, 'etc/hostname'));
    expect([seen.uid, seen.gid]).toEqual([H, H]);
    expect((await stat(join(pool.driver.imagePath(sha), 'etc/hostname'))).uid).toBe(0);
    const top = await stat(root);
    expect([top.uid, top.gid]).toEqual([H, H]);
    // Writes land in the root's own layer, never in the image.
    await writeFile(join(root, 'etc/hostname'), 'changed\n');
    expect(await readFile(join(pool.driver.imagePath(sha), 'etc/hostname'), 'utf8')).toBe('sliver\n');
    expect(await readFile(join(pool.mountpoint, 'slivers', A, 'upper/etc/hostname'), 'utf8')).toBe('changed\n');
    // The copied-up file keeps its owner: the sliver's root, in host ids.
    expect((await stat(join(root, 'etc/hostname'))).uid).toBe(H);
    // Idempotent: the same root, its contents kept.
    expect(await pool.driver.createRoot(A, sha, 4 * MiB, { layered: { idmapBase: H } })).toBe(root);
    expect(await readFile(join(root, 'etc/hostname'), 'utf8')).toBe('changed\n');
    // A snapshot root beside it keeps the ids the sliver sees (its instance driver maps them).
    expect(await pool.driver.createRoot(S, sha, 4 * MiB)).toBe(join(pool.mountpoint, 'slivers', S));
    expect(await pool.driver.rootIdShift(S)).toBe(0);
    expect(await pool.driver.rootIdShift(B)).toBeNull();
  });

  it('reads through layered roots fill the image\'s page cache (shared); a snapshot\'s do not', async () => {
    const rootB = await pool.driver.createRoot(B, sha, 4 * MiB, { layered: { idmapBase: H2 } });
    expect((await stat(join(rootB, 'etc/hostname'))).uid).toBe(H2);
    const imageFile = join(pool.driver.imagePath(sha), 'var/big.bin');
    await dropCache(imageFile);
    expect(await resident(imageFile)).toBeLessThan(MiB);
    await run('cat', [join(rootB, 'var/big.bin')]);
    // Nearly all of the 8 MiB: the host's reclaim may take a few pages back before they are
    // counted (CI once saw 8 MiB less 24 KiB), and a snapshot's reads leave under 1 MiB here.
    expect(await resident(imageFile)).toBeGreaterThanOrEqual(7 * MiB);
    // A's reads hit the same pages: nothing of its own.
    await run('cat', [join(pool.driver.rootPath(A), 'var/big.bin')]);
    await dropCache(imageFile);
    const snapshotFile = join(pool.driver.rootPath(S), 'var/big.bin');
    await dropCache(snapshotFile);
    await run('cat', [snapshotFile]);
    expect(await resident(snapshotFile)).toBeGreaterThanOrEqual(7 * MiB);
    expect(await resident(imageFile)).toBeLessThan(MiB);
  });

  it('the quota limits what a layered root adds', async () => {
    const root = pool.driver.rootPath(A);
    await dd(join(root, 'var/two'), 2, '/dev/urandom');
    const err = await dd(join(root, 'var/eight'), 8).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).stderr).toMatch(/Disk quota exceeded/);
    const u = await pool.driver.usage(A);
    expect(u!.exclusiveBytes).toBeGreaterThan(2 * MiB);
    expect(u!.exclusiveBytes).toBeLessThanOrEqual(4 * MiB + 256 * 1024);
    await pool.driver.createRoot(A, sha, 16 * MiB, { layered: { idmapBase: H } });
    await dd(join(root, 'var/eight'), 8);
  });

  it('the image is in use while a layered root has it as its lower layer', async () => {
    await pool.driver.deleteRoot(S);
    const err = await pool.driver.deleteImage(sha).catch((e: unknown) => e);
    expect(isStorageError(err, 'image_in_use')).toBe(true);
    expect((err as Error).message).toContain(A);
    expect((err as Error).message).toContain(B);
  });

  it('close() unmounts the layered roots with the pool; open() mounts them again', async () => {
    expect(await mountsUnder(pool.mountpoint)).toHaveLength(2);
    await pool.driver.close();
    expect(await mountsUnder(pool.mountpoint)).toEqual([]);
    await pool.driver.open();
    expect((await mountsUnder(pool.mountpoint)).sort()).toEqual([join(pool.mountpoint, 'slivers', A, 'rootfs'), join(pool.mountpoint, 'slivers', B, 'rootfs')].sort());
    expect(await readFile(join(pool.driver.rootPath(A), 'etc/hostname'), 'utf8')).toBe('changed\n');
    expect((await stat(join(pool.driver.rootPath(B), 'etc/hostname'))).uid).toBe(H2);
    // A root unmounted behind the driver's back (a crash, by hand) is mounted by createRoot.
    await run('umount', [join(pool.mountpoint, 'slivers', B, 'rootfs')]);
    expect(await readdir(join(pool.mountpoint, 'slivers', B, 'rootfs'))).toEqual([]);
    await pool.driver.createRoot(B, sha, 4 * MiB, { layered: { idmapBase: H2 } });
    expect(await readdir(pool.driver.rootPath(B))).toContain('etc');
  });

  it('a pool opened with layers off makes none, and says so', async () => {
    const off = new BtrfsDriver({ pool: pool.file, mountpoint: pool.mountpoint, layers: false });
    await off.open();
    expect(off.capabilities.layers).toBe(false);
    const err = await off.createRoot(S, sha, 4 * MiB, { layered: { idmapBase: H } }).catch((e: unknown) => e);
    expect(isStorageError(err, 'invalid_options')).toBe(true);
    expect(await off.listRoots()).toEqual([A, B]);
    // The layered roots made before stay layered (and mounted) under it.
    expect(await off.rootIdShift(A)).toBe(H);
  });

  it('deleteRoot unmounts and removes a layered root; then the image can go', async () => {
    await pool.driver.deleteRoot(A);
    await pool.driver.deleteRoot(B);
    await pool.driver.deleteRoot(B); // idempotent
    expect(await mountsUnder(pool.mountpoint)).toEqual([]);
    expect(await pool.driver.listRoots()).toEqual([]);
    await pool.driver.deleteImage(sha);
    expect(await pool.driver.listImages()).toEqual([]);
  });
});
