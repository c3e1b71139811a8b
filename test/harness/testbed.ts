// A testbed of several nodes on one machine: a shared "internet" (a Linux bridge inside a network
// namespace of its own) that node namespaces and an experimenter namespace join with one veth
// each, plus a node agent run as its own `planetlite-agent run` process (to be killed and
// restarted), plus small helpers to wait and to ssh from a namespace.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { run, tryRun } from '@planetlite/host';

/** The agent's command line entry point (runs the built dist). */
export const AGENT_BIN = fileURLToPath(new URL('../../apps/agent/bin/planetlite-agent.js', import.meta.url));

export interface Internet {
  /** Namespace holding the bridge. */
  ns: string;
  bridge: string;
  /** First three octets of the shared /24, e.g. `198.18.42`. */
  prefix: string;
}

/** Creates namespace `pl-inet-TAG` with a bridge in it, standing for the network every node is on. */
export async function makeInternet(opts: { tag: string; octet: number }): Promise<Internet> {
  const net: Internet = { ns: `pl-inet-${opts.tag}`, bridge: `br${opts.tag}`, prefix: `198.18.${opts.octet}` };
  await run('ip', ['netns', 'add', net.ns]);
  await run('ip', ['-n', net.ns, 'link', 'set', 'lo', 'up']);
  await run('ip', ['-n', net.ns, 'link', 'add', net.bridge, 'type', 'bridge']);
  await run('ip', ['-n', net.ns, 'link', 'set', net.bridge, 'up']);
  return net;
}

/**
 * Creates namespace `ns` and joins it to the internet with one veth: `link` inside `ns` with
 * address PREFIX.host/24, `link`i on the bridge. Returns the address.
 */
export async function joinInternet(net: Internet, opts: { ns: string; host: number; link: string }): Promise<string> {
  const address = `${net.prefix}.${opts.host}`;
  await run('ip', ['netns', 'add', opts.ns]);
  await run('ip', ['link', 'add', opts.link, 'netns', opts.ns, 'type', 'veth', 'peer', 'name', `${opts.link}i`, 'netns', net.ns]);
  await run('ip', ['-n', net.ns, 'link', 'set', `${opts.link}i`, 'master', net.bridge]);
  await run('ip', ['-n', net.ns, 'link', 'set', `${opts.link}i`, 'up']);
  await run('ip', ['-n', opts.ns, 'addr', 'add', `${address}/24`, 'dev', opts.link]);
  await run('ip', ['-n', opts.ns, 'link', 'set', opts.link, 'up']);
  await run('ip', ['-n', opts.ns, 'link', 'set', 'lo', 'up']);
  return address;
}

/**
 * Joins this machine's own namespace to the internet (the registry runs here and nodes reach it
 * at the returned address): `link` here, `link`i on the bridge. Gone with removeInternet.
 */
export async function joinInternetHere(net: Internet, opts: { host: number; link: string }): Promise<string> {
  const address = `${net.prefix}.${opts.host}`;
  await run('ip', ['link', 'add', opts.link, 'type', 'veth', 'peer', 'name', `${opts.link}i`, 'netns', net.ns]);
  await run('ip', ['-n', net.ns, 'link', 'set', `${opts.link}i`, 'master', net.bridge]);
  await run('ip', ['-n', net.ns, 'link', 'set', `${opts.link}i`, 'up']);
  await run('ip', ['addr', 'add', `${address}/24`, 'dev', opts.link]);
  await run('ip', ['link', 'set', opts.link, 'up']);
  return address;
}

/**
 * Caps a link of the internet at mbit each way: tbf on the sending side of both its ends (the
 * bridge port `link`i in the bridge's namespace, `link` in ns, or here when ns is null).
 */
export async function capLink(net: Internet, opts: { ns: string | null; link: string; mbit: number }): Promise<void> {
  const tbf = ['root', 'tbf', 'rate', `${opts.mbit}mbit`, 'burst', '64kb', 'latency', '100ms'];
  await run('tc', [...(opts.ns ? ['-n', opts.ns] : []), 'qdisc', 'replace', 'dev', opts.link, ...tbf]);
  await run('tc', ['-n', net.ns, 'qdisc', 'replace', 'dev', `${opts.link}i`, ...tbf]);
}

/** Deletes the bridge's namespace (and with it every bridge port); tolerates "already gone". */
export async function removeInternet(net: Internet | { ns: string }): Promise<void> {
  await tryRun('ip', ['netns', 'del', net.ns]);
}

/** Polls fn every 100 ms until it returns something truthy; throws (with the last error) after ms. */
export async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last instanceof Error ? last.message : String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs a command and resolves with its trimmed stdout; rejects with stderr on failure. Never blocks the event loop. */
export function exec(file: string, args: string[], timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${err.message}${stderr ? `\n${stderr.trim()}` : ''}`));
      else resolve(stdout.trim());
    });
  });
}

/** OpenSSH from namespace ns: `ssh -p PORT USER@HOST COMMAND`; resolves with the trimmed output. */
export function sshFrom(ns: string, opts: { identity: string; host: string; port: number; user: string }, command: string): Promise<string> {
  return exec('ip', [
    'netns', 'exec', ns, 'ssh', '-i', opts.identity, '-p', String(opts.port),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
    `${opts.user}@${opts.host}`, command,
  ], 30_000);
}

/** One line of the agent's pino log (or { msg: line } for a line that is not JSON). */
export interface LogRecord {
  msg?: string;
  level?: number;
  [key: string]: unknown;
}

/**
 * `planetlite-agent ARGS` as a child process in a process group of its own, its JSON log
 * parsed line by line. A hook can SIGKILL it from the very line handler that sees a given log
 * record, so the kill lands as close to that point of its work as a pipe allows.
 */
export class AgentProcess {
  readonly proc: ChildProcess;
  readonly records: LogRecord[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Started with the test's tool interposers first on its PATH. */
  readonly holds: boolean;
  #hooks = new Set<(r: LogRecord) => void>();

  /** With netns, the whole agent runs in that namespace (nsenter execs it: the pid stays the
   * agent's), so its own sockets (registry, BitTorrent) are the node's, as on a real machine. */
  /** With wrap, the agent runs under that command line (e.g. `unshare -m sh -c '…; exec "$@"' sh`). */
  constructor(args: string[], opts: { echo?: boolean; env?: Record<string, string>; holds?: boolean; netns?: string; wrap?: string[] } = {}) {
    this.holds = opts.holds ?? false;
    const argv = [AGENT_BIN, ...args];
    const [file0, fileArgs0] = opts.netns ? ['nsenter', [`--net=/run/netns/${opts.netns}`, '--', process.execPath, ...argv]] : [process.execPath, argv];
    const [file, fileArgs] = opts.wrap?.length ? [opts.wrap[0]!, [...opts.wrap.slice(1), file0, ...fileArgs0]] : [file0, fileArgs0];
    this.proc = spawn(file, fileArgs, {
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.exited = once(this.proc, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      if (opts.echo) process.stderr.write(`[agent ${this.proc.pid}] ${line}\n`);
      let rec: LogRecord;
      try {
        rec = JSON.parse(line) as LogRecord;
      } catch {
        rec = { msg: line };
      }
      this.records.push(rec);
      for (const h of [...this.#hooks]) h(rec);
    });
    createInterface({ input: this.proc.stderr! }).on('line', (line) => {
      if (opts.echo) process.stderr.write(`[agent ${this.proc.pid} stderr] ${line}\n`);
      this.stderr.push(line);
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the first record from index `from` on that matches; rejects if the agent exits first or after ms. */
  waitFor(what: string, pred: (r: LogRecord) => boolean, opts: { from?: number; ms?: number } = {}): Promise<LogRecord> {
    const hit = this.records.slice(opts.from ?? 0).find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const done = () => {
        this.#hooks.delete(hook);
        clearTimeout(timer);
      };
      const hook = (r: LogRecord) => {
        if (!pred(r)) return;
        done();
        resolve(r);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`agent ${this.pid}: timed out waiting for ${what}; its last log lines:\n${this.tail()}`));
      }, opts.ms ?? 60_000);
      this.#hooks.add(hook);
      void this.exited.then(({ code, signal }) => {
        if (!this.#hooks.has(hook)) return;
        done();
        reject(new Error(`agent ${this.pid} exited (code ${code}, signal ${signal}) before ${what}; its last log lines:\n${this.tail()}`));
      });
    });
  }

  /**
   * Arms a SIGKILL: sent (after delayMs, if given) when a record matching pred appears, to the
   * agent alone or, with group, to its whole process group (the commands it was running too).
   * Resolves with the record that triggered it.
   */
  killWhen(what: string, pred: (r: LogRecord) => boolean, opts: { group?: boolean; delayMs?: number; ms?: number } = {}): Promise<LogRecord> {
    return new Promise((resolve, reject) => {
      const hook = (r: LogRecord) => {
        if (!pred(r)) return;
        this.#hooks.delete(hook);
        if (opts.delayMs) setTimeout(() => this.kill('SIGKILL', opts.group), opts.delayMs);
        else this.kill('SIGKILL', opts.group);
        resolve(r);
      };
      this.#hooks.add(hook);
      const timer = setTimeout(() => {
        if (!this.#hooks.delete(hook)) return;
        reject(new Error(`agent ${this.pid}: never logged ${what}; its last log lines:\n${this.tail()}`));
      }, opts.ms ?? 60_000);
      void this.exited.then(() => {
        clearTimeout(timer);
        if (this.#hooks.delete(hook)) reject(new Error(`agent ${this.pid} exited before ${what}; its last log lines:\n${this.tail()}`));
      });
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL', group = false): void {
    try {
      if (group) process.kill(-this.pid, signal);
      else this.proc.kill(signal);
    } catch {
      // already gone
    }
  }

  /** SIGTERM (a clean stop), then SIGKILL to the whole group if it lingers. Resolves once it has exited. */
  async stop(graceMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) {
      this.kill('SIGTERM');
      const t = setTimeout(() => this.kill('SIGKILL', true), graceMs);
      await this.exited;
      clearTimeout(t);
    }
    return this.exited;
  }

  /** The last log lines, for error messages. */
  tail(n = 15): string {
    return [...this.records.slice(-n).map((r) => JSON.stringify(r)), ...this.stderr.slice(-5)].join('\n');
  }
}

/**
 * Removes LXC's cgroups of the named containers (lxc.payload.NAME, lxc.monitor.NAME, deepest
 * first) in every hierarchy under /sys/fs/cgroup; for teardown after a failure. Tolerant.
 */
export async function removeLxcCgroups(names: Iterable<string>): Promise<void> {
  const hierarchies = ['/sys/fs/cgroup', ...(await readdir('/sys/fs/cgroup', { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory()).map((e) => join('/sys/fs/cgroup', e.name))];
  for (const name of names) {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) continue;
    for (const h of hierarchies) {
      for (const prefix of ['lxc.payload.', 'lxc.monitor.']) {
        const dir = join(h, prefix + name);
        if (await stat(dir).then(() => true, () => false)) await tryRun('find', [dir, '-depth', '-type', 'd', '-exec', 'rmdir', '{}', ';']);
      }
    }
  }
}
