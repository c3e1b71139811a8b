// The btrfs pool's lifecycle and image import, on a real pool on a sparse loop file.
import { createHash } from 'node:crypto';
import { chmod, chown, lstat, mkdir, readFile, readdir, readlink, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, run } from '@planetlite/host';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loopsOf, makeTestPool, mountsAt, subvolumes, type TestPool } from '../test/pool.js';
import { missingTools, requireTools } from './btrfs/utils.js';
import { BtrfsDriver, drivers, isStorageError } from './index.js';

const sha256Of = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');

/** One member of a hand-made tar (ustar): what `tar --create` never writes from a directory. */
interface TarMember { name: string; type: '0' | '1' | '2' | '3' | '4' | '5'; mode?: number; link?: string; major?: number; minor?: number; body?: string }
const file = (name: string): TarMember => ({ name, type: '0', body: 'x' });

function tarOf(members: TarMember[]): Buffer {
  const blocks: Buffer[] = [];
  for (const m of members) {
    const body = Buffer.from(m.body ?? '');
    const h = Buffer.alloc(512);
    const put = (at: number, len: number, v: string) => h.write(v, at, len, 'utf8');
    const octal = (at: number, len: number, n: number) => put(at, len, `${n.toString(8).padStart(len - 1, '0')}\0`);
    put(0, 100, m.name);
    octal(100, 8, m.mode ?? 0o644);
    octal(108, 8, 0);
    octal(116, 8, 0);
    octal(124, 12, body.length);
    octal(136, 12, 1_700_000_000);
    put(148, 8, '        ');
    put(156, 1, m.type);
    put(157, 100, m.link ?? '');
    put(257, 8, 'ustar\x0000');
    octal(329, 8, m.major ?? 0);
    octal(337, 8, m.minor ?? 0);
    let sum = 0;
    for (const b of h) sum += b;
    put(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
    blocks.push(h, body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

let pool: TestPool;
const archives: Record<'tar' | 'gz' | 'xz' | 'zst', { path: string; sha: string }> = {} as never;

beforeAll(async () => {
  pool = await makeTestPool('1G');
  // A tiny root filesystem: a config file, an executable, a setuid file, a symlink, a user's home.
  const rootfs = join(pool.dir, 'rootfs');
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await mkdir(join(rootfs, 'usr/bin'), { recursive: true });
  await mkdir(join(rootfs, 'home/user'), { recursive: true });
  await writeFile(join(rootfs, 'etc/hostname'), 'sliver\n');
  await chmod(join(rootfs, 'etc/hostname'), 0o644);
  await writeFile(join(rootfs, 'usr/bin/hello'), '#!/bin/sh\necho hello\n');
  await chmod(join(rootfs, 'usr/bin/hello'), 0o755);
  await writeFile(join(rootfs, 'usr/bin/setuid-tool'), 'not really\n');
  await chmod(join(rootfs, 'usr/bin/setuid-tool'), 0o4755);
  await symlink('usr/bin', join(rootfs, 'bin'));
  await writeFile(join(rootfs, 'home/user/notes.txt'), 'mine\n');
  await chmod(join(rootfs, 'home/user/notes.txt'), 0o600);
  await chown(join(rootfs, 'home/user/notes.txt'), 1000, 1000);
  await chmod(join(rootfs, 'home/user'), 0o700);
  await chown(join(rootfs, 'home/user'), 1000, 1000);
  const make = async (kind: keyof typeof archives, flags: string[]): Promise<void> => {
    const path = join(pool.dir, `rootfs.${kind}`);
    await run('tar', ['--create', '--file', path, ...flags, '--numeric-owner', '--directory', rootfs, '.']);
    archives[kind] = { path, sha: await sha256Of(path) };
  };
  await make('tar', []);
  await make('gz', ['--gzip']);
  await make('xz', ['--xz']);
  await make('zst', ['--zstd']);
});

afterAll(async () => {
  await pool?.cleanup();
});

describe('btrfs storage pool', () => {
  it('is in the registry with its capabilities, and names what the host lacks', async () => {
    const d = drivers.btrfs!({ pool: '/tmp/unused.img', mountpoint: '/tmp/unused' });
    expect(d).toBeInstanceOf(BtrfsDriver);
    expect(d.name).toBe('btrfs');
    // Layered roots are known only once open() has tried one on this host.
    expect(d.capabilities).toEqual({ snapshots: true, quotas: true, layers: false });
    expect(await missingTools(['btrfs', 'losetup', 'planetlite-no-such-tool'])).toEqual(['planetlite-no-such-tool']);
    await expect(requireTools(['btrfs', 'zstd'], 'x')).resolves.toBeUndefined();
    const err = await requireTools(['planetlite-no-such-tool', 'btrfs'], 'the btrfs storage driver').catch((e: unknown) => e);
    expect(isStorageError(err, 'missing_tool')).toBe(true);
    expect((err as Error).message).toMatch(/planetlite-no-such-tool/);
    expect((err as Error).message).not.toMatch(/btrfs \(Debian/);
  });

  it('refuses work before open() and names that are not ids', async () => {
    await expect(pool.driver.listImages()).rejects.toSatisfy((e) => isStorageError(e, 'pool_not_open'));
    expect(() => pool.driver.rootPath('../../etc')).toThrow(/not a sliver id/);
    await expect(pool.driver.importImage('../x', archives.tar.path)).rejects.toSatisfy((e) => isStorageError(e, 'invalid_id'));
    await expect(pool.driver.createRoot('1b4e28ba-2fa1-11d2-883f-0016d3cca427/..', archives.tar.sha, 1)).rejects.toSatisfy((e) =>
      isStorageError(e, 'invalid_id'),
    );
  });

  it('open() creates, formats and mounts the loop file with quotas on, and is idempotent', async () => {
    await pool.driver.open();
    await pool.driver.open();
    expect(await mountsAt(pool.mountpoint)).toHaveLength(1);
    expect((await mountsAt(pool.mountpoint))[0]).toMatch(/ btrfs /);
    expect(await loopsOf(pool.file)).toHaveLength(1);
    expect((await lstat(pool.file)).blocks * 512).toBeLessThan(64 * 2 ** 20); // sparse
    await expect(run('btrfs', ['qgroup', 'show', pool.mountpoint])).resolves.toBeTruthy();
    expect(await pool.driver.listImages()).toEqual([]);
    expect(await pool.driver.listRoots()).toEqual([]);
  });

  it('imports a tar as a read-only image with owners, modes and symlinks kept', async () => {
    const { sha, path } = archives.tar;
    expect(await pool.driver.hasImage(sha)).toBe(false);
    await pool.driver.importImage(sha, path);
    expect(await pool.driver.hasImage(sha)).toBe(true);
    expect(await pool.driver.listImages()).toEqual([sha]);
    const img = pool.driver.imagePath(sha);
    expect(await readFile(join(img, 'etc/hostname'), 'utf8')).toBe('sliver\n');
    expect((await lstat(join(img, 'etc/hostname'))).mode & 0o7777).toBe(0o644);
    expect((await lstat(join(img, 'usr/bin/hello'))).mode & 0o7777).toBe(0o755);
    expect((await lstat(join(img, 'usr/bin/setuid-tool'))).mode & 0o7777).toBe(0o4755);
    expect(await readlink(join(img, 'bin'))).toBe('usr/bin');
    const notes = await lstat(join(img, 'home/user/notes.txt'));
    expect([notes.uid, notes.gid, notes.mode & 0o7777]).toEqual([1000, 1000, 0o600]);
    const home = await lstat(join(img, 'home/user'));
    expect([home.uid, home.gid, home.mode & 0o7777]).toEqual([1000, 1000, 0o700]);
    expect((await run('./hello', [], { cwd: join(img, 'usr/bin') })).stdout).toBe('hello');
    // Read-only: the property is set and a write fails.
    expect((await run('btrfs', ['property', 'get', '-ts', img, 'ro'])).stdout.trim()).toBe('ro=true');
    const err = await run('touch', [join(img, 'etc/new')]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as CommandError).stderr).toMatch(/Read-only file system/);
    // Idempotent: importing again changes nothing.
    await pool.driver.importImage(sha, path);
    expect(await pool.driver.listImages()).toEqual([sha]);
  });

  it('imports gzip, xz and zstd archives, also when asked twice at once', async () => {
    const { gz, xz, zst } = archives;
    await Promise.all([gz, gz, xz, zst].map((a) => pool.driver.importImage(a.sha, a.path)));
    for (const kind of ['gz', 'xz', 'zst'] as const) {
      const { sha } = archives[kind];
      expect(await readFile(join(pool.driver.imagePath(sha), 'usr/bin/hello'), 'utf8')).toMatch(/echo hello/);
      expect((await lstat(join(pool.driver.imagePath(sha), 'home/user/notes.txt'))).uid).toBe(1000);
    }
    expect(await pool.driver.listImages()).toEqual(Object.values(archives).map((a) => a.sha).sort());
  });

  it('refuses an archive whose sha256 does not match, leaving nothing behind', async () => {
    const before = await subvolumes(pool.mountpoint);
    const wrong = createHash('sha256').update('something else').digest('hex');
    const err = await pool.driver.importImage(wrong, archives.tar.path).catch((e: unknown) => e);
    expect(isStorageError(err, 'image_checksum_mismatch')).toBe(true);
    expect((err as Error).message).toContain(archives.tar.sha);
    expect(await pool.driver.hasImage(wrong)).toBe(false);
    expect((await readdir(join(pool.mountpoint, 'images'))).filter((n) => n.startsWith(wrong))).toEqual([]);
    expect(await subvolumes(pool.mountpoint)).toEqual(before);
  });

  it('undoes an import whose archive is broken, leaving nothing behind', async () => {
    const before = await subvolumes(pool.mountpoint);
    const whole = await readFile(archives.gz.path);
    const broken = join(pool.dir, 'broken.tar.gz');
    await writeFile(broken, whole.subarray(0, Math.floor(whole.length / 2)));
    const sha = await sha256Of(broken);
    await expect(pool.driver.importImage(sha, broken)).rejects.toBeInstanceOf(CommandError);
    expect(await pool.driver.hasImage(sha)).toBe(false);
    expect((await readdir(join(pool.mountpoint, 'images'))).filter((n) => n.startsWith(sha))).toEqual([]);
    expect(await subvolumes(pool.mountpoint)).toEqual(before);
    await expect(pool.driver.importImage(sha, join(pool.dir, 'missing.tar'))).rejects.toSatisfy((e) => isStorageError(e, 'archive_unreadable'));
  });

  it('refuses hostile archives whole, before anything is written, and keeps a setuid file of a plain one', async () => {
    const before = await subvolumes(pool.mountpoint);
    const cases: Array<[string, TarMember[], RegExp]> = [
      ['absolute path', [file('etc/ok'), file('/etc/cron.d/evil')], /outside the image's tree \(tar: Removing leading `\/' from member names\)/],
      ['dot-dot', [file('./etc/../../../root/.ssh/authorized_keys')], /outside the image's tree/],
      ['block device', [{ name: 'dev/sda', type: '4', major: 8, minor: 0 }], /"dev\/sda" is a block device/],
      ['memory device', [{ name: 'dev/mem', type: '3', major: 1, minor: 1 }], /character device 1,1/],
      ['hard link out', [{ name: 'etc/shadow-copy', type: '1', link: '../../../etc/shadow' }], /outside the image's tree \(tar: Removing leading `..\/..\/..\/' from hard link targets\)/],
      ['hard link absolute', [{ name: 'etc/shadow-copy', type: '1', link: '/etc/shadow' }], /outside the image's tree/],
      ['symlink race', [{ name: 'etc/d', type: '2', link: '/etc' }, file('etc/d/cron.d/evil')], /lies under the symlink "etc\/d"/],
    ];
    for (const [what, members, why] of cases) {
      const path = join(pool.dir, `hostile-${what.replace(/ /g, '-')}.tar`);
      await writeFile(path, tarOf(members));
      const err = await pool.driver.importImage(await sha256Of(path), path).catch((e: unknown) => e);
      expect(isStorageError(err, 'archive_unsafe'), what).toBe(true);
      expect((err as Error).message, what).toMatch(why);
    }
    expect(await subvolumes(pool.mountpoint)).toEqual(before);
    // The harmless devices and a setuid file (su, passwd in a real image) are imported.
    const plain = join(pool.dir, 'plain.tar');
    await writeFile(plain, tarOf([{ name: 'dev/null', type: '3', major: 1, minor: 3 }, { name: 'usr/bin/su', type: '0', mode: 0o4755, body: 'su' }]));
    const sha = await sha256Of(plain);
    await pool.driver.importImage(sha, plain);
    const su = await lstat(join(pool.mountpoint, 'images', sha, 'usr/bin/su'));
    expect(su.mode & 0o7777).toBe(0o4755);
    expect((await lstat(join(pool.mountpoint, 'images', sha, 'dev/null'))).isCharacterDevice()).toBe(true);
    await pool.driver.deleteImage(sha);
  });

  it('open() after close() finds the same images and removes leftovers of processes that died mid-work', async () => {
    const images = await pool.driver.listImages();
    const digest = (text: string): string => createHash('sha256').update(text).digest('hex');
    // What a crash mid-import and mid-createRoot leaves: *.partial subvolumes, one with a nested
    // one; named with a pid that no longer runs, or with none.
    const deadImport = join(pool.mountpoint, 'images', `${digest('interrupted')}.99999999.partial`);
    await run('btrfs', ['subvolume', 'create', deadImport]);
    await writeFile(join(deadImport, 'half-written'), 'x'.repeat(10_000));
    const oldImport = join(pool.mountpoint, 'images', `${digest('old')}.partial`);
    await run('btrfs', ['subvolume', 'create', oldImport]);
    const deadRoot = join(pool.mountpoint, 'slivers', '1b4e28ba-2fa1-11d2-883f-0016d3cca427.99999999.partial');
    await run('btrfs', ['subvolume', 'snapshot', pool.driver.imagePath(archives.tar.sha), deadRoot]);
    await run('btrfs', ['subvolume', 'create', join(deadRoot, 'nested')]);
    // Work in flight in a live process (here: this one) must survive another process's open().
    const liveImport = join(pool.mountpoint, 'images', `${digest('in flight')}.${process.pid}.partial`);
    await run('btrfs', ['subvolume', 'create', liveImport]);

    await pool.driver.close();
    await pool.driver.close();
    expect(await mountsAt(pool.mountpoint)).toEqual([]);
    expect(await loopsOf(pool.file)).toEqual([]);
    await expect(pool.driver.listImages()).rejects.toSatisfy((e) => isStorageError(e, 'pool_not_open'));

    await pool.driver.open();
    expect(await pool.driver.listImages()).toEqual(images);
    expect((await readdir(join(pool.mountpoint, 'images'))).sort()).toEqual([...images, `${digest('in flight')}.${process.pid}.partial`].sort());
    expect(await readdir(join(pool.mountpoint, 'slivers'))).toEqual([]);
    await run('btrfs', ['subvolume', 'delete', liveImport]);
    expect((await subvolumes(pool.mountpoint)).map((s) => s.path).sort()).toEqual(images.map((s) => `images/${s}`));
  });

  it('deletes images, idempotently', async () => {
    const { sha } = archives.gz;
    await pool.driver.deleteImage(sha);
    await pool.driver.deleteImage(sha);
    expect(await pool.driver.hasImage(sha)).toBe(false);
    expect(await pool.driver.listImages()).not.toContain(sha);
  });
});
