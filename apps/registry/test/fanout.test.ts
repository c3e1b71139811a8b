// Push to nodes and people: desired-state long-polls and the event stream wake on changes,
// within one registry and across two registry processes that share PostgreSQL and Redis.
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import pg from 'pg';
import { PlanetLiteClient, type Event } from '@planetlite/api';
import { ADMIN, makeWorld, ok, onPglite, testApp, type TestApp, type World } from './helpers.js';

describe('within one registry', () => {
  let t: TestApp;
  let w: World;
  let url: string;
  beforeAll(async () => {
    t = await testApp();
    w = await makeWorld(t.app);
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    const addr = t.app.server.address();
    url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });
  afterAll(() => t.close());

  it('a long-poll answers 304 when nothing changes, and wakes with the new state when something does', async () => {
    const node = new PlanetLiteClient({ registry: url, token: w.node });
    const first = await node.desiredState(w.ids.node);
    expect(first.state?.slivers).toHaveLength(1);
    expect(first.etag).toMatch(/^"/);
    const idle = await node.desiredState(w.ids.node, { etag: first.etag, wait: 1 });
    expect(idle.state).toBeNull();

    const poll = node.desiredState(w.ids.node, { etag: first.etag, wait: 30 });
    await new Promise((r) => setTimeout(r, 200));
    await ok(t.app, 202, 'POST', `/v1/slivers/${w.ids.sliver}/actions`, w.pi, { action: 'stop' });
    const woke = await poll;
    expect(woke.state?.slivers[0]?.desired).toBe('stopped');
    expect(woke.etag).not.toBe(first.etag);
  });

  it('a member key change reaches the desired state of nodes carrying the slice', async () => {
    const node = new PlanetLiteClient({ registry: url, token: w.node });
    const before = await node.desiredState(w.ids.node);
    const { execFileSync } = await import('node:child_process');
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const dir = mkdtempSync('/tmp/pl-key-');
    try {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'member', '-f', `${dir}/k`]);
      const key = readFileSync(`${dir}/k.pub`, 'utf8').trim();
      const poll = node.desiredState(w.ids.node, { etag: before.etag, wait: 30 });
      await ok(t.app, 201, 'POST', `/v1/users/${w.ids.user}/keys`, w.user, { key });
      const after = await poll;
      expect(after.state?.slivers[0]?.keys).toContain(key);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the event stream sends the backlog, then live events the caller may see', async () => {
    const member = new PlanetLiteClient({ registry: url, token: w.user });
    const outsider = new PlanetLiteClient({ registry: url, token: w.outsider });
    const seen: Event[] = [];
    const seenByOutsider: Event[] = [];
    const stop = new AbortController();
    const streams = [
      member.streamEvents({ slice: w.slice }, (e) => seen.push(e), stop.signal),
      outsider.streamEvents({}, (e) => seenByOutsider.push(e), stop.signal),
    ];
    const until = async (pred: () => boolean) => {
      for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 50));
    };
    await until(() => seen.some((e) => e.type === 'slice.created'));
    expect(seen.map((e) => e.type)).toContain('slice.created');
    await ok(t.app, 202, 'POST', `/v1/slivers/${w.ids.sliver}/actions`, w.pi, { action: 'freeze' });
    await until(() => seen.some((e) => e.type === 'sliver.action' && e.data.action === 'freeze'));
    stop.abort();
    await Promise.all(streams);
    expect(seen.filter((e) => e.data.action === 'freeze')).toHaveLength(1);
    const ids = seen.map((e) => e.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    // The outsider sees node events but nothing of a slice it has no part in.
    expect(seenByOutsider.some((e) => e.type === 'node.enrolled')).toBe(true);
    expect(seenByOutsider.filter((e) => e.slice !== null)).toEqual([]);
  });
});

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

describe.skipIf(onPglite)('across two registry processes (PostgreSQL + Redis)', () => {
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
