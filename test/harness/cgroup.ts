// A sliver's memory as the host's cgroupfs shows it, read by a test or benchmark itself (not
// through the agent), to watch the memory watchdog from outside.
import { execFileSync } from 'node:child_process';
import { readFileSync, readlinkSync } from 'node:fs';
import { containerName, parseMemoryStat, residentBytes } from '@planetlite/instance';

/** The sliver container's memory cgroup directory on the host (cgroup v1, as on these machines). */
export function memoryCgroup(sliverId: string): string {
  const out = execFileSync('find', ['/sys/fs/cgroup/memory', '-maxdepth', '3', '-type', 'd', '-name', `lxc.payload.${containerName(sliverId)}`], { encoding: 'utf8' }).trim();
  if (!out) throw new Error(`no memory cgroup for sliver ${sliverId}`);
  return out.split('\n')[0]!;
}

/** Resident memory (anonymous + mapped files) of a memory cgroup; null once it is gone. */
export function residentOf(dir: string): number | null {
  try {
    return residentBytes(parseMemoryStat(readFileSync(`${dir}/memory.stat`, 'utf8')), 'v1');
  } catch {
    return null;
  }
}

/** What /proc says of a process's containment (a VM sliver's qemu). */
export function containment(pid: number) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
  const ns = (p: number | 'self', kind: string) => readlinkSync(`/proc/${p}/ns/${kind}`);
  const mountinfo = readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').filter(Boolean);
  return {
    uid: Number(field('Uid').split(/\s+/)[1]), // effective
    gid: Number(field('Gid').split(/\s+/)[1]),
    noNewPrivs: field('NoNewPrivs'),
    seccomp: field('Seccomp'),
    capBnd: BigInt(`0x${field('CapBnd')}`),
    ownMountNs: ns(pid, 'mnt') !== ns('self', 'mnt'),
    ownUserNs: ns(pid, 'user') !== ns('self', 'user'),
    mountinfo,
    /** Mount points of its mount namespace. */
    mounts: mountinfo.map((l) => l.split(' ')[4]!),
    cgroups: readFileSync(`/proc/${pid}/cgroup`, 'utf8'),
  };
}

/** The path of a cgroup v1 controller's cgroup in /proc/PID/cgroup text. */
export function cgroupOf(text: string, controller: string): string | undefined {
  return text.split('\n').map((l) => l.split(':')).find((f) => f[1]?.split(',').includes(controller))?.[2];
}
