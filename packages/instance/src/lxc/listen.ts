// Whether anything listens on a TCP port inside a running container, read from the host: the
// kernel's socket table of the container's network namespace (/proc/PID/net/tcp and tcp6 of any
// of its processes) — no process started, nothing of the sliver's run.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The kernel's state number of a listening socket in /proc/net/tcp. */
const LISTEN = '0A';

/** True when a socket table (the text of /proc/PID/net/tcp or tcp6) has a socket listening on `port`. */
export function listensOn(table: string, port: number): boolean {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of table.split('\n').slice(1)) {
    // "  0: 00000000:0016 00000000:0000 0A …": slot, local address:port, remote, state.
    const [, local, , state] = line.trim().split(/\s+/);
    if (state === LISTEN && local?.endsWith(`:${hex}`)) return true;
  }
  return false;
}

/** A process of the cgroup at `dir` or of one below it (a container's init may sit in a child
 * cgroup of its own, as systemd puts itself in init.scope); null when there is none. */
export function pidIn(dir: string, depth = 3): number | null {
  const text = readOrNull(join(dir, 'cgroup.procs'));
  const first = text?.split('\n').find((l) => l.trim() !== '');
  if (first) return Number(first);
  if (depth === 0) return null;
  let children: string[];
  try {
    children = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return null;
  }
  for (const child of children) {
    const pid = pidIn(join(dir, child), depth - 1);
    if (pid !== null) return pid;
  }
  return null;
}

function readOrNull(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}
