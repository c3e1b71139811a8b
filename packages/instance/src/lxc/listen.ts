// Whether anything listens on a TCP port inside a running container, read from the host: the
// kernel's socket table of the container's network namespace (/proc/PID/net/tcp and tcp6 of any
// of its processes, pidIn in cgroup.ts) — no process started, nothing of the sliver's run.

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
