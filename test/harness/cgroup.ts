// A sliver's memory as the host's cgroupfs shows it, read by a test or benchmark itself (not
// through the agent), to watch the memory watchdog from outside.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
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
