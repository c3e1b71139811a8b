// Writes what makes a root filesystem a sliver of a slice, before it first starts and whenever
// the slice's members or keys change: /etc/slicename, the slice-named user, every member's key
// for that user and for root, and host keys of its own.
import { chmod, chown, mkdir, readFile, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { ed25519HostKey } from './hostkey.js';

/** Uid and gid of the slice user inside the sliver (the first ordinary user id). */
export const SLICE_UID = 1000;

export interface ProvisionSpec {
  rootfs: string;
  slice: string;
  keys: string[];
}

export async function provisionRoot(p: ProvisionSpec): Promise<void> {
  const etc = join(p.rootfs, 'etc');
  await mkdir(etc, { recursive: true });
  await writeFile(join(etc, 'slicename'), `${p.slice}\n`);
  await writeFile(join(etc, 'hostname'), `${p.slice}\n`);
  await ensureLine(join(etc, 'passwd'), p.slice, `${p.slice}:x:${SLICE_UID}:${SLICE_UID}:slice ${p.slice}:/home/${p.slice}:/bin/sh`);
  await ensureLine(join(etc, 'group'), p.slice, `${p.slice}:x:${SLICE_UID}:`);
  // An unusable password ('*'): keys only. Missing shadow files are left missing (tiny images).
  if (await exists(join(etc, 'shadow'))) await ensureLine(join(etc, 'shadow'), p.slice, `${p.slice}:*:19000:0:99999:7:::`);
  const authorized = p.keys.join('\n') + (p.keys.length ? '\n' : '');
  await writeKeys(join(p.rootfs, 'root'), 0, 0, authorized);
  await writeKeys(join(p.rootfs, 'home', p.slice), SLICE_UID, SLICE_UID, authorized);
  await ensureHostKey(p.rootfs);
}

/** A warm-pool spare's root before any slice has it: its own host key, and nothing else. */
export async function provisionSpare(rootfs: string): Promise<void> {
  await ensureHostKey(rootfs);
}

async function writeKeys(home: string, uid: number, gid: number, text: string): Promise<void> {
  const ssh = join(home, '.ssh');
  await mkdir(ssh, { recursive: true });
  for (const dir of [home, ssh]) await chown(dir, uid, gid);
  await chmod(home, 0o755);
  await chmod(ssh, 0o700);
  const file = join(ssh, 'authorized_keys');
  await writeFile(file, text, { mode: 0o600 });
  await chown(file, uid, gid);
  await chmod(file, 0o600);
}

/** Each sliver gets its own ed25519 host key, never the image's (an image may carry none). */
async function ensureHostKey(rootfs: string): Promise<void> {
  const dir = join(rootfs, 'etc', 'ssh');
  const key = join(dir, 'ssh_host_ed25519_key');
  if (await exists(key)) return;
  await mkdir(dir, { recursive: true });
  const pair = ed25519HostKey('sliver host key');
  await writeFile(key, pair.private, { mode: 0o600 });
  await writeFile(`${key}.pub`, `${pair.public}\n`, { mode: 0o644 });
}

/** Replaces the line whose first field is name, or appends it. */
async function ensureLine(file: string, name: string, line: string): Promise<void> {
  const text = (await exists(file)) ? await readFile(file, 'utf8') : '';
  const lines = text.split('\n').filter((l) => l !== '' && l.split(':')[0] !== name);
  await writeFile(file, [...lines, line].join('\n') + '\n');
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
