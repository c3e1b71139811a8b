// The host tools a driver runs: checked once, at the driver's check(), by looking them up on PATH,
// with the Debian package that brings each one named in the error.
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

/** The Debian package that ships each host tool the drivers run. */
export const TOOL_PACKAGES: Record<string, string> = {
  btrfs: 'btrfs-progs',
  'mkfs.btrfs': 'btrfs-progs',
  blkid: 'util-linux',
  findmnt: 'util-linux',
  nsenter: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  losetup: 'mount',
  truncate: 'coreutils',
  timeout: 'coreutils',
  tar: 'tar',
  gzip: 'gzip',
  xz: 'xz-utils',
  zstd: 'zstd',
  'dpkg-deb': 'dpkg',
  'qemu-system-x86_64': 'qemu-system-x86',
  ip: 'iproute2',
  tc: 'iproute2',
  nft: 'nftables',
  sysctl: 'procps',
  'lxc-start': 'lxc',
  'lxc-stop': 'lxc',
  'lxc-info': 'lxc',
  'lxc-attach': 'lxc',
  'lxc-freeze': 'lxc',
  'lxc-unfreeze': 'lxc',
  'lxc-cgroup': 'lxc',
  'lxc-wait': 'lxc',
};

/** The tools of `tools` that are not executable anywhere on PATH. */
export async function missingTools(tools: readonly string[], path = process.env.PATH ?? ''): Promise<string[]> {
  const dirs = path.split(delimiter).filter(Boolean);
  const missing: string[] = [];
  for (const tool of tools) {
    let found = false;
    for (const dir of dirs) {
      found = await access(join(dir, tool), constants.X_OK).then(() => true, () => false);
      if (found) break;
    }
    if (!found) missing.push(tool);
  }
  return missing;
}

/**
 * Throws one error naming every missing tool and the package that provides it; `toError` makes
 * it the driver family's own error type (StorageError, InstanceError, NetworkError).
 */
export async function requireTools(tools: readonly string[], who: string, toError: (message: string) => Error = (m) => new Error(m)): Promise<void> {
  const missing = await missingTools(tools);
  if (!missing.length) return;
  const named = missing.map((t) => `${t} (Debian package ${TOOL_PACKAGES[t] ?? 'unknown'})`).join(', ');
  throw toError(`${who} needs host tools that are not on PATH: ${named}; run scripts/setup.sh`);
}
