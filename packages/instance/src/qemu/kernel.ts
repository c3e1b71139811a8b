// Kernels for VM slivers. The node's own is Debian's linux-image-amd64, fetched with apt-get
// download into a cache (nothing is installed on the host); an image that ships a kernel and its
// modules boots that kernel instead. Either way the initramfs is node-built (initramfs.ts), and
// the kernel is booted as the ELF vmlinux inside the bzImage (PVH entry): xz decompression of
// the bzImage costs ≈ 3 s of a TCG boot.
import { constants } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { run, tryRun } from '@planetlite/host';
import { InstanceError } from '../errors.js';
import type { BootAssets } from './config.js';
import { buildInitramfs, INITRAMFS_MODULES, initramfsVersion } from './initramfs.js';

export const DEFAULT_KERNEL_CACHE = '/var/cache/planetlite-kvm';
/** linux-image-amd64 is a metapackage; its one dependency is the versioned kernel package. */
const KERNEL_METAPACKAGE = 'linux-image-amd64';

/**
 * The node kernel and its initramfs, downloading and unpacking on first use. Only the kernel, its
 * config and the initramfs's modules are unpacked, not the 400 MB of modules. Every step writes
 * under a temporary name and renames, so a crash or a concurrent agent never sees half a file.
 */
export async function nodeKernel(cache: string, busybox: string): Promise<BootAssets> {
  await mkdir(cache, { recursive: true, mode: 0o755 });
  const deb = await kernelPackage(cache);
  const tree = join(cache, basename(deb, '.deb'));
  if (!(await isDir(join(tree, 'boot')))) await unpackKernel(deb, tree);
  const bzImage = await kernelIn(join(tree, 'boot'));
  if (!bzImage) throw new InstanceError('missing_kernel_feature', `qemu driver: no boot/vmlinuz-* in ${deb}; delete ${tree} and the .deb to fetch it again`);
  const release = bzImage.release;
  const vmlinux = join(tree, 'vmlinux');
  if (!(await isFile(vmlinux)) && !(await extractVmlinux(bzImage.path, vmlinux)))
    throw new InstanceError('missing_kernel_feature', `qemu driver: no compressed ELF kernel found in ${bzImage.path}`);
  const initrd = join(tree, `initrd-planetlite-${initramfsVersion(await readFile(busybox))}.img`);
  if (!(await isFile(initrd))) {
    await buildInitramfs({ modulesDir: join(tree, 'lib/modules', release), busybox, out: initrd });
    // Builds of an older /init: running VMs keep their open copy, new starts take this one.
    for (const f of await readdir(tree)) if (/^initrd-planetlite-.*\.img$/.test(f) && join(tree, f) !== initrd) await rm(join(tree, f), { force: true });
  }
  return { source: 'node', release, kernel: vmlinux, initrd };
}

/** The cached .deb of the node kernel, fetched when missing. Offline, any cached kernel package. */
async function kernelPackage(cache: string): Promise<string> {
  const depends = await tryRun('apt-cache', ['depends', KERNEL_METAPACKAGE]);
  const pkg = /Depends: (linux-image-\S+)/.exec(depends?.stdout ?? '')?.[1];
  const cached = (await readdir(cache)).filter((f) => f.startsWith('linux-image-') && f.endsWith('.deb')).sort();
  const mine = pkg ? cached.find((f) => f.startsWith(`${pkg}_`)) : cached.at(-1);
  if (mine) return join(cache, mine);
  if (!pkg) throw new InstanceError('missing_kernel_feature', `qemu driver: apt-cache knows no ${KERNEL_METAPACKAGE} and ${cache} holds no kernel package (apt-get update, or put a linux-image-*.deb there)`);
  // Into a fresh directory, then renamed: apt-get download writes the final name directly.
  const tmp = await mkdtemp(join(cache, '.download-'));
  try {
    await run('apt-get', ['download', '-q', pkg], { cwd: tmp, timeoutMs: 600_000 });
    const got = (await readdir(tmp)).find((f) => f.endsWith('.deb'));
    if (!got) throw new InstanceError('missing_kernel_feature', `qemu driver: apt-get download ${pkg} wrote no .deb`);
    await rename(join(tmp, got), join(cache, got));
    return join(cache, got);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

async function unpackKernel(deb: string, tree: string): Promise<void> {
  const partial = `${tree}.partial-${process.pid}`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  const patterns = ['./boot/vmlinuz-*', './boot/config-*', ...INITRAMFS_MODULES.map((m) => `*/kernel/*/${m}.ko*`)];
  try {
    // A pipe of two tools: bash only connects them, every value is a positional argument.
    await run('bash', ['-o', 'pipefail', '-c', 'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards "${@:3}"', 'unpack', deb, partial, ...patterns], { timeoutMs: 300_000 });
    await rename(partial, tree).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err; // another agent won the race
    });
  } finally {
    await rm(partial, { recursive: true, force: true });
  }
}

/** The kernel in a boot directory: vmlinuz-RELEASE, the newest release when there are several. */
async function kernelIn(bootDir: string): Promise<{ path: string; release: string } | null> {
  const names = await readdir(bootDir).catch(() => [] as string[]);
  const releases = names.map((n) => /^vmlinuz-(.+)$/.exec(n)?.[1]).filter((r): r is string => r !== undefined);
  const release = releases.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1);
  return release ? { path: join(bootDir, `vmlinuz-${release}`), release } : null;
}

/** Compressed payloads a bzImage may carry: magic bytes and the tool that decompresses one file. */
const PAYLOADS = [
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), ext: '.xz', argv: (f: string) => ['xz', ['-d', '-f', '-q', '--single-stream', f]] as const },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), ext: '.zst', argv: (f: string) => ['zstd', ['-d', '-f', '-q', f]] as const },
  { magic: Buffer.from([0x1f, 0x8b, 0x08]), ext: '.gz', argv: (f: string) => ['gzip', ['-d', '-f', '-q', f]] as const },
];

/**
 * Writes the ELF vmlinux inside a bzImage to out (what the kernel tree's scripts/extract-vmlinux
 * does): decompress from each payload magic until the result is an ELF. False when none is.
 */
export async function extractVmlinux(bzImage: string, out: string): Promise<boolean> {
  const image = await readFile(bzImage);
  const scratch = await mkdtemp(`${out}.extract-`);
  try {
    for (const p of PAYLOADS) {
      for (let at = image.indexOf(p.magic), tries = 0; at >= 0 && tries < 5; at = image.indexOf(p.magic, at + 1), tries++) {
        const packed = join(scratch, `vmlinux${p.ext}`);
        const plain = join(scratch, 'vmlinux');
        await writeFile(packed, image.subarray(at));
        const [tool, args] = p.argv(packed);
        // Trailing data after the stream makes gzip and zstd exit non-zero; the ELF check decides.
        await tryRun(tool, args, { timeoutMs: 120_000 });
        const head = await readFile(plain).then((b) => b.subarray(0, 4), () => Buffer.alloc(0));
        if (head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]))) {
          await rename(plain, out);
          return true;
        }
        await rm(plain, { force: true });
        await rm(packed, { force: true });
      }
    }
    return false;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * A path inside an image root with every symlink resolved inside that root, as the guest would
 * see it (an image is untrusted input: `/vmlinuz -> /etc/shadow` must not read the host's file).
 * Null when a component is missing or there are too many links.
 */
export async function resolveInRoot(root: string, path: string): Promise<string | null> {
  const todo = path.split('/').filter(Boolean);
  const done: string[] = [];
  for (let links = 0; todo.length; ) {
    const part = todo.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const host = join(root, ...done, part);
    const st = await lstat(host).catch(() => null);
    if (!st) return null;
    if (!st.isSymbolicLink()) {
      done.push(part);
      continue;
    }
    if (++links > 40) return null;
    const target = await readlink(host);
    if (target.startsWith('/')) done.length = 0;
    todo.unshift(...target.split('/').filter(Boolean));
  }
  return join(root, ...done);
}

/** Reads a regular file without following a final symlink (resolveInRoot has resolved them). */
async function readRegular(path: string): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    if (!(await fh.stat()).isFile()) throw new InstanceError('missing_kernel_feature', `qemu driver: ${path} is not a regular file`);
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

/** The image's kernel: /vmlinuz, /boot/vmlinuz, or the newest /boot/vmlinuz-RELEASE, with its
 * modules in /lib/modules/RELEASE. Null when the image lacks either: it boots the node kernel. */
export async function findImageKernel(root: string): Promise<{ path: string; release: string; modulesDir: string } | null> {
  for (const link of ['vmlinuz', 'boot/vmlinuz']) {
    const path = await resolveInRoot(root, link);
    const release = path && /^vmlinuz-(.+)$/.exec(basename(path))?.[1];
    const modulesDir = release ? await resolveInRoot(root, `lib/modules/${release}`) : null;
    if (path && release && modulesDir && (await isDir(modulesDir))) return { path, release, modulesDir };
  }
  const boot = await resolveInRoot(root, 'boot');
  const newest = boot && (await kernelIn(boot));
  const modulesDir = newest ? await resolveInRoot(root, `lib/modules/${newest.release}`) : null;
  return newest && modulesDir && (await isDir(modulesDir)) ? { ...newest, modulesDir } : null;
}

/**
 * Boot assets from the image's own kernel, made in outDir (the sliver's directory), or null when
 * the image ships none. Read from a root the guest has not run on yet (the image's base, or the
 * sliver's snapshot before its first start): a guest could plant a kernel in its own root.
 */
export async function imageKernel(root: string, outDir: string, busybox: string): Promise<BootAssets | null> {
  const found = await findImageKernel(root);
  if (!found) return null;
  await mkdir(outDir, { recursive: true });
  const bzImage = join(outDir, 'vmlinuz');
  await writeFile(bzImage, await readRegular(found.path), { mode: 0o600 });
  const vmlinux = join(outDir, 'vmlinux');
  // A kernel without an ELF payload (or one we cannot decompress) still boots as a bzImage.
  const kernel = (await extractVmlinux(bzImage, vmlinux)) ? vmlinux : bzImage;
  if (kernel === vmlinux) await rm(bzImage, { force: true });
  const initrd = join(outDir, 'initrd.img');
  await buildInitramfs({ modulesDir: found.modulesDir, busybox, out: initrd });
  return { source: 'image', release: found.release, kernel, initrd };
}

async function isDir(path: string): Promise<boolean> {
  return (await stat(path).catch(() => null))?.isDirectory() ?? false;
}

async function isFile(path: string): Promise<boolean> {
  return ((await stat(path).catch(() => null))?.size ?? 0) > 0;
}
