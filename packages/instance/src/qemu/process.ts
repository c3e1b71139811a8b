// The qemu process of a VM sliver: spawned detached so it outlives the agent (as LXC containers
// do), and found again from its pidfile and /proc by a restarted agent.
import { readFile } from 'node:fs/promises';
import { spawnDetached } from '@planetlite/host';

/** Linux reports /proc/PID/stat times in USER_HZ, 100 on every architecture the testbed runs on. */
const USER_HZ = 100;

/** The pid in a VM's pidfile when that process is alive and is the qemu that wrote this pidfile
 * (a reused pid belongs to someone else), else null. */
export async function livePid(pidfile: string): Promise<number | null> {
  const pid = Number((await readFile(pidfile, 'utf8').catch(() => '')).trim());
  return Number.isSafeInteger(pid) && pid > 0 && (await isQemuOf(pid, pidfile)) ? pid : null;
}

/** Whether pid is a live (not zombie) process whose command line names this pidfile. */
export async function isQemuOf(pid: number, pidfile: string): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  if (!cmdline.split('\0').includes(pidfile)) return false;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== '' && state !== 'Z' && state !== 'X';
}

/** CPU time (user + system) of a process since it started, in seconds; null when it is gone. */
export async function processCpuSeconds(pid: number): Promise<number | null> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
  if (stat === null) return null;
  // Fields after "(comm)": state is field 3, utime 14 and stime 15 (proc(5)); comm may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [utime, stime] = [Number(fields[11]), Number(fields[12])];
  return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / USER_HZ : null;
}

/**
 * Memory a VM costs the host that no other VM shares: private anonymous memory (qemu, the TCG
 * translation cache) plus the guest RAM in its memfd (RssShmem). RssFile is left out: it is mostly
 * the mapped kernel, one page-cache copy for every VM booting it.
 */
export async function processResidentBytes(pid: number): Promise<number | null> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  if (status === null) return null;
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s*(\\d+) kB$`, 'm').exec(status)?.[1] ?? NaN);
  const total = kb('RssAnon') + kb('RssShmem');
  return Number.isFinite(total) ? total * 1024 : null;
}

/**
 * Starts qemu (argv: the jail helper, which execs qemu) as a process of its own (@planetlite/host's
 * spawnDetached: its own session, no pipe to the agent), inside the netns when given, with
 * stdout/stderr appended to log. Not -daemonize: its fork and setsid are what qemu's sandbox
 * forbids. The pidfile says when qemu is up.
 */
export function spawnQemu(argv: string[], opts: { netns?: string | undefined; log: string; cwd: string }): { exited: Promise<number | null> } {
  return spawnDetached(argv, opts);
}

/** Waits until the qemu process is gone (or the deadline passes); true when it is gone. Asks
 * /proc, not the pidfile: qemu removes its pidfile before it has finished exiting. */
export async function waitGone(pidfile: string, pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Not isQemuOf: a dying process's cmdline reads empty before it is gone, and it would count as
    // gone while still tearing down. Gone is no process, a zombie, or another process at that pid.
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === '' || state === 'Z' || state === 'X') return true;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline !== '' && !cmdline.split('\0').includes(pidfile)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
