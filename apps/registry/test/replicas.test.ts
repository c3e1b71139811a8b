// Two `planetlite-registry serve` processes on one PostgreSQL database and one Redis: a change
// made through one wakes a node long-polling the other, and event streams span both.
// (PostgreSQL only: PGlite is one process's embedded database.)
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import pg from 'pg';
import { PlanetLiteClient, type Event } from '@planetlite/api';
import { ADMIN } from './helpers.js';

const REGISTRY_MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));

/** A real `planetlite-registry serve` process; resolves once it answers /healthz. */
async function startProcess(env: Record<string, string>, port: number): Promise<{ proc: ChildProcess; url: string }> {
  const proc = spawn(process.execPath, [REGISTRY_MAIN, 'serve', '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, ...env, PLANETLITE_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`registry exited with ${proc.exitCode}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return { proc, url };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error('registry did not answer /healthz in 20 s');
}

async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('across two registry processes (PostgreSQL + Redis)', () => {
  const procs: ChildProcess[] = [];
  let a: string;
  let b: string;
  beforeAll(async () => {
    const admin = new pg.Client({ connectionString: inject('pgUrl') });
    await admin.connect();
    const name = `two_${Math.random().toString(36).slice(2, 10)}`;
    await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const dbUrl = new URL(inject('pgUrl'));
    dbUrl.pathname = `/${name}`;
    const env = { DATABASE_URL: dbUrl.toString(), REDIS_URL: inject('redisUrl'), PLANETLITE_ADMIN_EMAIL: ADMIN.email, PLANETLITE_ADMIN_PASSWORD: ADMIN.password };
    // Started together: the migration lock lets one migrate while the other waits.
    const [pa, pb] = await Promise.all([startProcess(env, await freePort()), startProcess(env, await freePort())]);
    procs.push(pa.proc, pb.proc);
    a = pa.url;
    b = pb.url;
  });
  afterAll(async () => {
    for (const p of procs) {
      p.kill('SIGTERM');
      if (p.exitCode === null) await once(p, 'exit');
    }
  });

  it('a change made through one replica wakes a node long-polling the other', async () => {
    const adminA = new PlanetLiteClient({ registry: a });
    await adminA.login(ADMIN.email, ADMIN.password);
    await adminA.createSite({ login_base: 'duo', name: 'Duo', max_slices: 5, max_slivers: 5 });
    const tok = await adminA.createEnrollmentToken('duo');
    const enrolled = await new PlanetLiteClient({ registry: b }).enroll({
      token: tok.token, hostname: 'duo1.test', address: '192.0.2.30',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 512, disk_mb: 1024 },
    });
    await adminA.createSlice({ name: 'duo_exp', description: 'd', url: 'u' });
    const node = new PlanetLiteClient({ registry: b, token: enrolled.node_key });
    const first = await node.desiredState(enrolled.node_id);
    expect(first.state?.slivers).toEqual([]);

    const started = Date.now();
    const poll = node.desiredState(enrolled.node_id, { etag: first.etag, wait: 30 });
    await new Promise((r) => setTimeout(r, 300));
    const sliver = await adminA.createSliver('duo_exp', enrolled.node_id);
    const woke = await poll;
    // Woken by the change (a 304 at the 30 s deadline would give state null).
    expect(woke.state?.slivers.map((s) => s.id)).toEqual([sliver.id]);
    expect(Date.now() - started).toBeLessThan(29_000);

    // The event stream on B carries what was done through A.
    const seen: Event[] = [];
    const stop = new AbortController();
    const stream = adminA.streamEvents({ type: 'sliver.action' }, () => undefined, stop.signal);
    const onB = new PlanetLiteClient({ registry: b, token: adminA.token });
    const streamB = onB.streamEvents({ type: 'sliver.action' }, (e) => seen.push(e), stop.signal);
    await new Promise((r) => setTimeout(r, 300));
    await adminA.sliverAction(sliver.id, 'stop');
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    stop.abort();
    await Promise.all([stream, streamB]);
    expect(seen.map((e) => e.sliver)).toEqual([sliver.id]);
  });
});
