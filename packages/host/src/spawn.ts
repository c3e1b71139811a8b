// A process that outlives the agent (a VM sliver's qemu, as LXC containers outlive it): its own
// session, no pipe to the agent, its output appended to a log file.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';

export interface DetachedOptions {
  /** File that takes the process's stdout and stderr (appended, created 0600). */
  log: string;
  cwd?: string;
  /** Run it inside the network namespace NETNS (`nsenter --net=/run/netns/NETNS`). */
  netns?: string | undefined;
  /** Its environment; default: only PATH. */
  env?: Record<string, string>;
}

/**
 * Starts argv detached. `exited` settles with its exit code (null when it could not start or a
 * signal ended it) if it ends while the agent runs; libuv still reaps it then. The agent may exit
 * while it runs on.
 */
export function spawnDetached(argv: readonly string[], opts: DetachedOptions): { pid: number | undefined; exited: Promise<number | null> } {
  const full = opts.netns === undefined ? [...argv] : ['nsenter', `--net=${join('/run/netns', opts.netns)}`, '--', ...argv];
  const fd = openSync(opts.log, 'a', 0o600);
  try {
    const child = spawn(full[0]!, full.slice(1), {
      detached: true,
      stdio: ['ignore', fd, fd],
      cwd: opts.cwd,
      env: opts.env ?? { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code));
      child.once('error', () => resolve(null));
    });
    child.unref();
    return { pid: child.pid, exited };
  } finally {
    closeSync(fd);
  }
}
