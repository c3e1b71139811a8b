// What check() reads from the host: tools, kernel features, LXC's policy files.
import { access, constants, readFile, stat } from 'node:fs/promises';
import { delimiter, dirname, join, resolve } from 'node:path';
import { tryRun } from '@planetlite/host';
import { SECCOMP_POLICY_FILE } from './seccomp.js';

/** The lxc-* tools the driver calls. */
export const LXC_TOOLS = ['lxc-start', 'lxc-stop', 'lxc-info', 'lxc-attach', 'lxc-freeze', 'lxc-unfreeze', 'lxc-cgroup', 'lxc-wait'] as const;
export type LxcTool = (typeof LXC_TOOLS)[number];

async function exists(path: string): Promise<boolean> {
  return access(path, constants.F_OK).then(
    () => true,
    () => false,
  );
}

export async function readTrimmed(path: string): Promise<string | null> {
  return readFile(path, 'utf8').then(
    (s) => s.trim(),
    () => null,
  );
}

/** The driver's own seccomp policy file in lxcPath (which check() writes) when the kernel has
 * seccomp filters (the Seccomp field exists), else null. */
export async function seccompProfile(lxcPath: string): Promise<string | null> {
  const status = (await readTrimmed('/proc/self/status')) ?? '';
  return /^Seccomp:/m.test(status) ? join(lxcPath, SECCOMP_POLICY_FILE) : null;
}

export async function apparmorEnabled(): Promise<boolean> {
  return (await readTrimmed('/sys/module/apparmor/parameters/enabled')) === 'Y';
}

/** Why this kernel cannot give a sliver its own user namespace, or null if it can. */
export async function userNamespaceProblem(): Promise<string | null> {
  if (!(await exists('/proc/self/ns/user'))) return 'the kernel has no user namespaces (CONFIG_USER_NS)';
  const max = await readTrimmed('/proc/sys/user/max_user_namespaces');
  if (max === '0') return 'user namespaces are disabled (sysctl user.max_user_namespaces = 0)';
  return null;
}

/** A statically linked busybox on PATH (package busybox-static), for the idmap probe's rootfs. */
export async function findStaticBusybox(): Promise<string | null> {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const path = join(dir, 'busybox');
    if (!(await access(path, constants.X_OK).then(() => true, () => false))) continue;
    // ldd exits non-zero on a static binary ("not a dynamic executable").
    return (await tryRun('ldd', [path])) === null ? path : null;
  }
  return null;
}

/** The first directory on the way to path (path included) that users other than its owner
 * cannot search. An unprivileged sliver's root is such a user, and LXC's child checks, as that
 * user, that it can reach the lxcpath ("Could not access … Please grant it x access"). The rootfs
 * needs no such thing: LXC makes its idmapped mount from the privileged parent. */
export async function firstUnsearchable(path: string): Promise<string | null> {
  const chain: string[] = [];
  for (let p = resolve(path); ; p = dirname(p)) {
    chain.unshift(p);
    if (p === dirname(p)) break;
  }
  for (const dir of chain) {
    const st = await stat(dir).catch(() => null);
    if (st && (st.mode & 0o001) === 0) return dir;
  }
  return null;
}
