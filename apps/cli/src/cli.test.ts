// runCli without a registry: help, usage errors, and the errors that need no server.
import { createServer, type Server } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './cli.js';
import { saveConfig } from './config.js';
import type { Io } from './io.js';

let dir: string;
let closedPort: number;

/** A port nothing listens on: bind, note the port, close. */
async function freePort(): Promise<number> {
  const srv: Server = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'planetlite-cli-'));
  closedPort = await freePort();
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function run(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}) {
  let stdout = '';
  let stderr = '';
  const io: Io = {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env: { HOME: dir, PLANETLITE_CONFIG: join(dir, 'config.json'), ...opts.env },
    stdin: opts.stdin === undefined ? undefined : Readable.from([opts.stdin]),
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

describe('runCli without a registry', () => {
  it('prints help on stdout and exits 0', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: planetlite');
    for (const cmd of ['login', 'site', 'user', 'key', 'slice', 'sliver', 'node', 'image', 'events']) expect(r.stdout).toContain(cmd);
    const sub = await run(['slice', 'create', '--help']);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain('--description');
  });

  it('exits 2 with commander\'s message on usage errors', async () => {
    const missing = await run(['site', 'create', 'princeton']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("required option '--name <name>' not specified");
    const badInt = await run(['site', 'create', 'princeton', '--name', 'P', '--max-slices', 'two', '--max-slivers', '3']);
    expect(badInt.code).toBe(2);
    expect(badInt.stderr).toContain('must be a whole number');
    expect((await run(['frobnicate'])).code).toBe(2);
    expect((await run(['slice', 'renew', 'princeton_x'])).code).toBe(2);
    expect((await run(['slice', 'renew', 'princeton_x', '--days', '1', '--expires-at', '2030-01-01T00:00:00Z'])).code).toBe(2);
    expect((await run(['site', 'update', 'princeton'])).code).toBe(2);
    expect((await run(['site', 'update', 'princeton', '--enable', '--disable'])).code).toBe(2);
    expect((await run(['sliver', 'create', 's_x', 'n', '--timeout', '5'])).code).toBe(2);
    expect((await run(['user', 'create', '--email', 'a@b', '--name', 'A', '--site', 's', '--role', 'boss'])).code).toBe(2);
  });

  it('says how to log in when there is no login', async () => {
    const r = await run(['slice', 'ls']);
    expect(r).toEqual({ code: 1, stdout: '', stderr: 'planetlite: not logged in: run planetlite login --registry URL --email ...\n' });
  });

  it('does not send a saved token to a different registry', async () => {
    const config = join(dir, 'other.json');
    await saveConfig(config, { registry: 'http://127.0.0.1:1234', token: 'tok' });
    const r = await run(['--config', config, '--registry', 'http://127.0.0.1:5678', 'slice', 'ls']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('planetlite: not logged in to http://127.0.0.1:5678: run planetlite login --registry http://127.0.0.1:5678 --email ...\n');
  });

  it('refuses an expired saved login before calling the registry', async () => {
    const config = join(dir, 'expired.json');
    await saveConfig(config, { registry: 'http://127.0.0.1:1234', token: 'tok', expires_at: '2000-01-01T00:00:00Z', email: 'a@b.c' });
    const r = await run(['--config', config, 'slice', 'ls']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^planetlite: your login to http:\/\/127\.0\.0\.1:1234 expired at .*: run planetlite login --email a@b\.c\n$/);
  });

  it('names an unreachable registry and hints at what to do', async () => {
    const url = `http://127.0.0.1:${closedPort}`;
    const r = await run(['--registry', url, '--token', 't', 'site', 'ls']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`planetlite: cannot reach the registry at ${url} (ECONNREFUSED): is the registry running? set --registry or PLANETLITE_REGISTRY\n`);
    const login = await run(['login', '--email', 'a@b.c'], { env: { PLANETLITE_REGISTRY: url, PLANETLITE_PASSWORD: 'pw' } });
    expect(login.code).toBe(1);
    expect(login.stderr).toContain(`cannot reach the registry at ${url}`);
  });

  it('wants a password from somewhere', async () => {
    const r = await run(['--registry', 'http://127.0.0.1:1234', 'login', '--email', 'a@b.c']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('planetlite: no password: pass --password, set PLANETLITE_PASSWORD, or pipe it on stdin\n');
  });

  it('reports a bad key argument before contacting anyone', async () => {
    const r = await run(['key', 'add', join(dir, 'missing.pub')]);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(r.stderr).toContain('no such file, and not an OpenSSH public key line');
  });
});
