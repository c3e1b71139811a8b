// Writes what makes a root filesystem a sliver of a slice, before it first starts and whenever
// the slice's members or keys change: /etc/slicename, the slice-named user, every member's key
// for that user and for root, and host keys of its own. Every file and folder appears whole (made
// under a temporary name, owned, then renamed): an agent killed in the middle leaves the root as
// it was or as it should be, never a truncated /etc/passwd or a host key sshd refuses.
import { chmod, chown, mkdir, readFile, rename, rmdir, unlink, writeFile, access } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ed25519HostKey } from './hostkey.js';

/** Uid and gid of the slice user inside the sliver (the first ordinary user id). */
export const SLICE_UID = 1000;

export interface ProvisionSpec {
  rootfs: string;
  slice: string;
  keys: string[];
  /** Host ids of the root's files are the sliver's plus this (storage's rootIdShift): 0 for a
   * snapshot the instance driver idmaps, the sliver's idmap base for a layered root. */
  idShift: number;
}

export async function provisionRoot(p: ProvisionSpec): Promise<void> {
  const own = owner(p.idShift);
  const etc = join(p.rootfs, 'etc');
  await ensureDir(etc, own(0));
  await writeOwned(join(etc, 'slicename'), `${p.slice}\n`, own(0));
  await writeOwned(join(etc, 'hostname'), `${p.slice}\n`, own(0));
  await ensureLine(join(etc, 'passwd'), p.slice, `${p.slice}:x:${SLICE_UID}:${SLICE_UID}:slice ${p.slice}:/home/${p.slice}:/bin/sh`, own(0));
  await ensureLine(join(etc, 'group'), p.slice, `${p.slice}:x:${SLICE_UID}:`, own(0));
  // An unusable password ('*'): keys only. Missing shadow files are left missing (tiny images).
  if (await exists(join(etc, 'shadow'))) await ensureLine(join(etc, 'shadow'), p.slice, `${p.slice}:*:19000:0:99999:7:::`, own(0));
  const authorized = p.keys.join('\n') + (p.keys.length ? '\n' : '');
  await ensureDir(join(p.rootfs, 'home'), own(0));
  await writeKeys(join(p.rootfs, 'root'), own(0), authorized);
  await writeKeys(join(p.rootfs, 'home', p.slice), own(SLICE_UID), authorized);
  await ensureHostKey(p.rootfs, own(0));
}

/** A warm-pool spare's root before any slice has it: its own host key, and nothing else. */
export async function provisionSpare(rootfs: string, idShift: number): Promise<void> {
  await ensureHostKey(rootfs, owner(idShift)(0));
}

/** Host uid and gid of an id inside the sliver (a user's group has the user's number here). */
type Owner = { uid: number; gid: number };
const owner = (shift: number) => (id: number): Owner => ({ uid: shift + id, gid: shift + id });

/** The temporary name a file or folder is made under before it is renamed into place. */
const pending = (path: string) => join(dirname(path), `.${basename(path)}.planetlite-new`);

/** Made with its parents if missing (each owned by `own`); an existing folder is left as it is. */
async function ensureDir(dir: string, own: Owner): Promise<void> {
  if (await exists(dir)) return;
  await ensureDir(dirname(dir), own);
  const tmp = pending(dir);
  await rmdir(tmp).catch(ignoreMissing); // empty: a crash came between its mkdir and its rename
  await mkdir(tmp);
  await chown(tmp, own.uid, own.gid);
  await rename(tmp, dir);
}

/** Written whole and owned by `own` (a sliver's root sees it as its own), replacing the file, not
 * writing into it: a symlink by its name is replaced too, never followed. */
async function writeOwned(file: string, text: string, own: Owner, mode?: number): Promise<void> {
  const tmp = pending(file);
  await writeFile(tmp, text, mode === undefined ? {} : { mode });
  await chown(tmp, own.uid, own.gid);
  if (mode !== undefined) await chmod(tmp, mode);
  await rename(tmp, file);
}

function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}

async function writeKeys(home: string, own: Owner, text: string): Promise<void> {
  const ssh = join(home, '.ssh');
  await mkdir(ssh, { recursive: true });
  for (const dir of [home, ssh]) await chown(dir, own.uid, own.gid);
  await chmod(home, 0o755);
  await chmod(ssh, 0o700);
  await writeOwned(join(ssh, 'authorized_keys'), text, own, 0o600);
}

/** Each sliver gets its own ed25519 host key, never the image's (an image may carry none). */
async function ensureHostKey(rootfs: string, own: Owner): Promise<void> {
  const dir = join(rootfs, 'etc', 'ssh');
  const key = join(dir, 'ssh_host_ed25519_key');
  if (await exists(key)) {
    // A crash while the key was written leaves its temporary copy, a private key sshd never uses.
    await unlink(pending(key)).catch(ignoreMissing);
    return;
  }
  await ensureDir(dir, own);
  const pair = ed25519HostKey('sliver host key');
  // The public half first: once the private key is there, the pair is.
  await writeOwned(`${key}.pub`, `${pair.public}\n`, own, 0o644);
  await writeOwned(key, pair.private, own, 0o600);
}

/** Replaces the line whose first field is name, or appends it. */
async function ensureLine(file: string, name: string, line: string, own: Owner): Promise<void> {
  const text = (await exists(file)) ? await readFile(file, 'utf8') : '';
  const lines = text.split('\n').filter((l) => l !== '' && l.split(':')[0] !== name);
  await writeOwned(file, [...lines, line].join('\n') + '\n', own);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

/**
 * Key changes for a sliver that has run: written from inside it (lxc-attach), so that a symlink
 * the sliver planted in its own filesystem resolves inside the sliver, never on the host.
 */
export function keysScript(slice: string): string[] {
  return [
    'sh',
    '-c',
    [
      'set -e',
      'umask 077',
      'mkdir -p /root/.ssh "/home/$1/.ssh"',
      'cat > /root/.ssh/authorized_keys.new',
      'mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys',
      'cp /root/.ssh/authorized_keys "/home/$1/.ssh/authorized_keys"',
      `chown -R ${SLICE_UID}:${SLICE_UID} "/home/$1/.ssh"`,
    ].join('; '),
    'sh',
    slice,
  ];
}
