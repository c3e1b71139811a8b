// The embedded database's commits reach the disk: the flushes PostgreSQL asks for are seen by
// the kernel (strace), and the registry answers a write only after the WAL holding it was flushed.
// A machine without power cuts can show no more than that the flush happened, and in order.
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRegistryProcess, type RegistryProcess } from '../harness/registry-process.ts';

const DB_DIST = fileURLToPath(new URL('../../packages/db/dist/index.js', import.meta.url));
const ADMIN = { email: 'durable@planetlite.test', password: 'durable-password' };

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pl-durable-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** fdatasync/fsync calls in an strace -y log, by the file they flushed. */
function flushes(log: string): { call: string; path: string }[] {
  return [...log.matchAll(/\b(fdatasync|fsync)\(\d+<([^>]*)>\) = 0/g)].map((m) => ({ call: m[1]!, path: m[2]! }));
}

describe('embedded database durability', () => {
  it('passes one WAL flush per commit to the kernel, where PGlite on its own passes none', () => {
    execFileSync('strace', ['-V'], { stdio: 'ignore' }); // a clear failure if strace is missing
    const COMMITS = 20;
    const script = `
      import { openDatabase } from ${JSON.stringify(DB_DIST)};
      const db = await openDatabase({ dataDir: process.argv[1], durable: process.argv[2] === 'durable' });
      await db.query('CREATE TABLE t (id serial PRIMARY KEY, v text)');
      process.stderr.write('ready\\n');
      for (let i = 0; i < ${COMMITS}; i++) await db.query('INSERT INTO t (v) VALUES ($1)', ['row ' + i]);
      process.exit(0); // no clean close: its checkpoint would flush too
    `;
    const run = (mode: string) => {
      const dir = tempDir();
      const log = join(dir, 'strace');
      execFileSync('strace', ['-f', '-y', '-e', 'trace=fsync,fdatasync', '-o', log, process.execPath, '--input-type=module', '-e', script, join(dir, 'data'), mode], { stdio: 'ignore', timeout: 240_000 });
      return flushes(readFileSync(log, 'utf8'));
    };
    const plain = run('plain');
    expect(plain).toEqual([]);
    const durable = run('durable');
    // Every commit (the CREATE TABLE and each INSERT) flushed its WAL segment.
    expect(durable.filter((f) => f.call === 'fdatasync' && f.path.includes('/pg_wal/')).length).toBeGreaterThanOrEqual(COMMITS + 1);
  }, 300_000);

  it('answers a write only after the WAL holding it was flushed', async () => {
    const dataDir = tempDir();
    const reg: RegistryProcess = await startRegistryProcess({ PLANETLITE_DATA_DIR: dataDir, PLANETLITE_ADMIN_EMAIL: ADMIN.email, PLANETLITE_ADMIN_PASSWORD: ADMIN.password }, { timeoutMs: 180_000 });
    cleanups.push(() => reg.stop());
    const login = await fetch(`${reg.url}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    const { token } = (await login.json()) as { token: string };

    // Attach to the running registry (strace takes all its threads): socket reads and writes and the flushes, in order.
    const log = join(tempDir(), 'strace');
    const strace: ChildProcess = spawn('strace', ['-f', '-tt', '-y', '-s', '24', '-e', 'trace=read,write,writev,fsync,fdatasync', '-o', log, '-p', String(reg.proc.pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
    cleanups.push(async () => {
      if (strace.exitCode === null && strace.signalCode === null) {
        strace.kill('SIGINT');
        await once(strace, 'exit');
      }
    });
    let stderr = '';
    strace.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    for (let i = 0; i < 600 && !/attached/.test(stderr); i++) await new Promise((r) => setTimeout(r, 50));
    expect(stderr).toMatch(/attached/);

    const res = await fetch(`${reg.url}/v1/sites`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ login_base: 'durable', name: 'Durable', max_slices: 1, max_slivers: 1 }),
    });
    expect(res.status).toBe(201);
    strace.kill('SIGINT');
    await once(strace, 'exit');

    const lines = readFileSync(log, 'utf8').split('\n');
    const request = lines.findIndex((l) => /\bread\(\d+<(socket|TCP)[^>]*>, "POST \/v1\/sites/.test(l));
    const answer = lines.findIndex((l) => /\bwritev?\(\d+<(socket|TCP)[^>]*>, .*HTTP\/1\.1 201/.test(l));
    expect(request).toBeGreaterThanOrEqual(0);
    expect(answer).toBeGreaterThan(request);
    const between = flushes(lines.slice(request, answer).join('\n'));
    expect(between.filter((f) => f.call === 'fdatasync' && f.path.includes('/pg_wal/')).length).toBeGreaterThanOrEqual(1);
  }, 300_000);
});
