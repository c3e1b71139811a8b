// Throwaway PostgreSQL and Redis servers for tests, run from Debian's packages
// (postgresql, redis-server; scripts/setup.sh installs them) on free loopback ports.
//
// - startPostgres({ durable? }): initdb into a fresh temp dir, start it with pg_ctl, trust auth;
//   fsync off unless durable (durability tests). restart() stops and starts it on its port.
//   As root, initdb/pg_ctl refuse to run, so they run as the `postgres` user via runuser.
// - startRedis({ port? }): a foreground redis-server child, no persistence; port brings a
//   stopped one back where its clients look for it.
// - createTestDatabase(adminUrl): an isolated database on an already running server;
//   usable from test files, which only get the URL (`inject('pgUrl')`).
//
// Every server is cleaned up by stop(), and also on process 'exit', SIGINT, SIGTERM and
// SIGHUP. As a last resort (the process is SIGKILLed) a small detached watchdog per
// server notices the parent is gone and stops the server / removes its temp dir.
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chmod, chown, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

export interface PostgresServer {
  /** postgres://postgres@127.0.0.1:PORT/postgres (trust auth, superuser). */
  url: string;
  port: number;
  /** Temp dir holding the data dir, socket and log; removed by stop(). */
  dir: string;
  /** CREATE DATABASE <prefix>_<random>; returns its URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** Stops the server (fast: clients are cut), waits downMs, and starts it again on the same port. */
  restart(downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface PostgresOptions {
  /**
   * Flush as a production server does (fsync, synchronous_commit and full_page_writes on), for
   * durability tests. Default false: tests run faster with fsync=off.
   */
  durable?: boolean;
  /** More server settings, `name=value` each (benchmarks: `shared_preload_libraries=pg_stat_statements`). */
  settings?: string[];
}

export interface RedisServer {
  /** redis://127.0.0.1:PORT */
  url: string;
  port: number;
  stop(): Promise<void>;
}

const SETUP_HINT = 'Run `bash scripts/setup.sh` (as root) to install the Debian packages.';
const PG_ROOT = '/usr/lib/postgresql';
const START_ATTEMPTS = 3;

// ---------------------------------------------------------------------------------------
// small helpers

interface ExecResult {
  stdout: string;
  stderr: string;
}

function run(
  file: string,
  args: readonly string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        cwd: opts.cwd,
        timeout: opts.timeoutMs ?? 120_000,
        maxBuffer: 16 * 1024 * 1024,
        env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (err) {
          const cmd = [file, ...args].join(' ');
          const out = `${stdout}${stderr}`.trim();
          reject(new Error(`command failed: ${cmd}\n${err.message}${out ? `\n${out}` : ''}`));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
  });
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** uid/gid of a local user from /etc/passwd. */
function lookupUser(name: string): { uid: number; gid: number } {
  const passwd = readFileSync('/etc/passwd', 'utf8');
  for (const line of passwd.split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name && uid !== undefined && gid !== undefined) {
      return { uid: Number(uid), gid: Number(gid) };
    }
  }
  throw new Error(`user "${name}" not found in /etc/passwd. ${SETUP_HINT}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not determine a free port'));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** True if something accepts TCP connections on 127.0.0.1:port. */
export function isPortListening(port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const done = (up: boolean): void => {
      sock.destroy();
      resolve(up);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------
// cleanup on exit / signals, plus a watchdog for SIGKILL

const syncCleanups = new Set<() => void>();
let handlersInstalled = false;

function runSyncCleanups(): void {
  for (const fn of [...syncCleanups]) {
    syncCleanups.delete(fn);
    try {
      fn();
    } catch {
      // best effort: keep cleaning the rest
    }
  }
}

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', runSyncCleanups);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      runSyncCleanups();
      // If nobody else handles this signal, restore the default behaviour (die by it).
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

function registerCleanup(fn: () => void): () => void {
  installExitHandlers();
  syncCleanups.add(fn);
  return () => {
    syncCleanups.delete(fn);
  };
}

// Runs detached: waits until our process is gone, then runs the cleanup command and
// removes the dir (if any). Arguments are passed positionally, never spliced into the script.
const WATCHDOG_SCRIPT = [
  'parent=$1; dir=$2; shift 2',
  'while kill -0 "$parent" 2>/dev/null; do sleep 1; done',
  '"$@" >/dev/null 2>&1',
  'if [ -n "$dir" ]; then rm -rf -- "$dir"; fi',
].join('\n');

function startWatchdog(dir: string, cleanupCmd: readonly string[]): ChildProcess | undefined {
  try {
    const child = spawn(
      '/bin/sh',
      ['-c', WATCHDOG_SCRIPT, 'planetlite-watchdog', String(process.pid), dir, ...cleanupCmd],
      { detached: true, stdio: 'ignore' },
    );
    child.on('error', () => {});
    child.unref();
    return child;
  } catch {
    return undefined;
  }
}

function killWatchdog(child: ChildProcess | undefined): void {
  if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL'); // its own process group (detached): sh + sleep
  } catch {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

interface PgBin {
  initdb: string;
  pgCtl: string;
  version: number;
}

async function findPostgresBin(): Promise<PgBin> {
  const override = process.env.PLANETLITE_PG_BINDIR;
  const candidates: { dir: string; version: number }[] = [];
  if (override) {
    candidates.push({ dir: override, version: 0 });
  } else {
    let entries: string[] = [];
    try {
      entries = await readdir(PG_ROOT);
    } catch {
      // handled below
    }
    for (const e of entries) {
      if (/^\d+(\.\d+)?$/.test(e)) candidates.push({ dir: path.join(PG_ROOT, e, 'bin'), version: Number(e) });
    }
    candidates.sort((a, b) => b.version - a.version);
  }
  for (const c of candidates) {
    const initdb = path.join(c.dir, 'initdb');
    const pgCtl = path.join(c.dir, 'pg_ctl');
    if (existsSync(initdb) && existsSync(pgCtl)) return { initdb, pgCtl, version: c.version };
  }
  throw new Error(
    `PostgreSQL server binaries (initdb, pg_ctl) not found in ${override ?? `${PG_ROOT}/<version>/bin`}. ${SETUP_HINT}`,
  );
}

function buildDbUrl(port: number, database: string): string {
  return `postgres://postgres@127.0.0.1:${port}/${encodeURIComponent(database)}`;
}

function sanitizePrefix(prefix: string): string {
  const p = prefix.toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/^[^a-z_]+/, '');
  return (p || 't').slice(0, 40);
}

/**
 * CREATE DATABASE <prefix>_<random> on the server behind adminUrl (a superuser URL such as
 * `inject('pgUrl')`) and return the new database's URL. Each call gives an isolated DB.
 */
export async function createTestDatabase(adminUrl: string, prefix = 't'): Promise<string> {
  const name = `${sanitizePrefix(prefix)}_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE "${name}"`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Start a fresh PostgreSQL server on a free port in a new temp dir. */
export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  const bin = await findPostgresBin();
  const asRoot = isRoot();
  const pgUser = asRoot ? lookupUser('postgres') : undefined;
  // As root: run the PostgreSQL tools as the postgres user.
  const asPg = (file: string, args: string[]): [string, string[]] =>
    asRoot ? ['runuser', ['-u', 'postgres', '--', file, ...args]] : [file, args];

  const dir = await mkdtemp(path.join(os.tmpdir(), 'planetlite-pg-'));
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'log');
  let started = false;

  const serverOpts = (port: number): string =>
    [
      `-p ${port}`,
      `-k '${dir}'`,
      '-c listen_addresses=127.0.0.1',
      ...(options.durable ? [] : ['-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off']),
      '-c max_connections=200',
      ...(options.settings ?? []).map((kv) => `-c ${kv}`),
    ].join(' ');

  let watchdog: ChildProcess | undefined;
  const stopSync = (): void => {
    killWatchdog(watchdog);
    if (started) {
      const [file, args] = asPg(bin.pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '30']);
      try {
        execFileSync(file, args, { cwd: dir, stdio: 'ignore', timeout: 60_000 });
      } catch {
        // not running
      }
      started = false;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup(stopSync);

  try {
    if (pgUser) {
      await chmod(dir, 0o700);
      await chown(dir, pgUser.uid, pgUser.gid);
    }
    {
      const [file, args] = asPg(bin.initdb, [
        '-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C',
      ]);
      await run(file, args, { cwd: dir });
    }
    watchdog = startWatchdog(dir, [
      ...asPg(bin.pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w']).flat(),
    ]);

    let port = 0;
    let lastErr: unknown;
    for (let attempt = 1; attempt <= START_ATTEMPTS && !started; attempt++) {
      port = await freePort();
      const [file, args] = asPg(bin.pgCtl, ['start', '-D', dataDir, '-w', '-t', '60', '-l', logFile, '-o', serverOpts(port)]);
      try {
        started = true; // from here on, stop() must try pg_ctl stop
        await run(file, args, { cwd: dir, timeoutMs: 90_000 });
      } catch (err) {
        lastErr = err;
        // make sure a half-started server is gone before retrying on another port
        const [sf, sa] = asPg(bin.pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w']);
        await run(sf, sa, { cwd: dir }).catch(() => {});
        started = false;
      }
    }
    if (!started) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(
        `PostgreSQL did not start (${START_ATTEMPTS} attempts): ${lastErr instanceof Error ? lastErr.message : String(lastErr)}` +
          (log ? `\n--- server log (${logFile}) ---\n${log.slice(-4_000)}` : ''),
      );
    }

    const url = buildDbUrl(port, 'postgres');
    let stopping: Promise<void> | undefined;
    return {
      url,
      port,
      dir,
      createDatabase: (prefix?: string) => createTestDatabase(url, prefix),
      async restart(downMs = 0) {
        const [sf, sa] = asPg(bin.pgCtl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60']);
        await run(sf, sa, { cwd: dir, timeoutMs: 90_000 });
        await sleep(downMs);
        const [file, args] = asPg(bin.pgCtl, ['start', '-D', dataDir, '-w', '-t', '60', '-l', logFile, '-o', serverOpts(port)]);
        await run(file, args, { cwd: dir, timeoutMs: 90_000 });
      },
      stop() {
        stopping ??= (async () => {
          unregister();
          killWatchdog(watchdog);
          const [file, args] = asPg(bin.pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '30']);
          try {
            await run(file, args, { cwd: dir, timeoutMs: 60_000 });
          } finally {
            started = false;
            await rm(dir, { recursive: true, force: true });
          }
        })();
        return stopping;
      },
    };
  } catch (err) {
    unregister();
    killWatchdog(watchdog);
    stopSync();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------
// Redis

function findRedisServer(): string {
  const override = process.env.PLANETLITE_REDIS_SERVER;
  if (override) return override;
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/bin', '/usr/sbin'])) {
    if (!dir) continue;
    const p = path.join(dir, 'redis-server');
    if (existsSync(p)) return p;
  }
  throw new Error(`redis-server not found on PATH. ${SETUP_HINT}`);
}

/** Send PING over raw TCP; true on +PONG. */
function redisPing(port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (ok: boolean): void => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      if (buf.includes('\r\n')) done(buf.startsWith('+PONG'));
    });
    sock.once('error', () => done(false));
    sock.once('close', () => done(false));
  });
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function startRedisOnce(bin: string, port: number): Promise<RedisServer> {
  const child = spawn(
    bin,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() },
  );
  let output = '';
  const collect = (d: Buffer): void => {
    output = (output + d.toString('utf8')).slice(-8_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    spawnError = err;
  });

  // The watchdog only matters if we get SIGKILLed; on any orderly path it is killed first
  // (so it can never signal a recycled pid).
  const watchdog = child.pid ? startWatchdog('', ['kill', '-KILL', String(child.pid)]) : undefined;
  const killSync = (): void => {
    killWatchdog(watchdog);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const unregister = registerCleanup(killSync);
  const fail = async (msg: string): Promise<never> => {
    unregister();
    killWatchdog(watchdog);
    killSync();
    await waitForExit(child, 5_000);
    throw new Error(`${msg}${output.trim() ? `\n--- redis-server output ---\n${output.trim()}` : ''}`);
  };

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (spawnError) {
      const code = (spawnError as NodeJS.ErrnoException).code;
      return fail(code === 'ENOENT' ? `redis-server not found (${bin}). ${SETUP_HINT}` : `redis-server failed to spawn: ${spawnError.message}`);
    }
    if (child.exitCode !== null || child.signalCode !== null) {
      return fail(`redis-server exited early (code ${child.exitCode}, signal ${child.signalCode}) on port ${port}`);
    }
    if (await redisPing(port)) break;
    if (Date.now() > deadline) return fail(`redis-server did not answer PING on port ${port} within 20s`);
    await sleep(50);
  }

  let stopping: Promise<void> | undefined;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop() {
      stopping ??= (async () => {
        unregister();
        killWatchdog(watchdog);
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM');
          if (!(await waitForExit(child, 10_000))) {
            child.kill('SIGKILL');
            await waitForExit(child, 10_000);
          }
        }
      })();
      return stopping;
    },
  };
}

/** Start a throwaway redis-server (no persistence) on a free port, or on port (to bring one back). */
export async function startRedis(opts: { port?: number } = {}): Promise<RedisServer> {
  const bin = findRedisServer();
  if (opts.port) return startRedisOnce(bin, opts.port);
  let lastErr: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    try {
      return await startRedisOnce(bin, await freePort());
    } catch (err) {
      lastErr = err;
      // Only a lost race for the port is worth another try.
      if (!(err instanceof Error) || !/address already in use/i.test(err.message)) throw err;
    }
  }
  throw lastErr;
}
