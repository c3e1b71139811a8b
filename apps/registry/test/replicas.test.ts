// Two `planetlite-registry serve` processes on one PostgreSQL database and one Redis: a change
// made through one wakes a node long-polling the other, and event streams span both.
// (PostgreSQL only: PGlite is one process's embedded database.)
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { ApiError, PlanetLiteClient, type Event } from '@planetlite/api';
import { createTestDatabase } from '../../../test/harness/services.ts';
import { startRegistryProcess, type RegistryProcess } from '../../../test/harness/registry-process.ts';
import { ADMIN } from './helpers.js';

describe('across two registry processes (PostgreSQL + Redis)', () => {
  const procs: RegistryProcess[] = [];
  let a: string;
  let b: string;
  beforeAll(async () => {
    const env = {
      DATABASE_URL: await createTestDatabase(inject('pgUrl'), 'replicas'),
      REDIS_URL: inject('redisUrl'),
      PLANETLITE_ADMIN_EMAIL: ADMIN.email,
      PLANETLITE_ADMIN_PASSWORD: ADMIN.password,
    };
    // Started together: the migration lock lets one migrate while the other waits.
    const started = await Promise.allSettled([startRegistryProcess(env), startRegistryProcess(env)]);
    for (const s of started) if (s.status === 'fulfilled') procs.push(s.value);
    for (const s of started) if (s.status === 'rejected') throw s.reason;
    a = procs[0]!.url;
    b = procs[1]!.url;
  });
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop()));
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
    const onB = new PlanetLiteClient({ registry: b, token: adminA.token });
    const streamB = onB.streamEvents({ type: 'sliver.action' }, (e) => seen.push(e), stop.signal);
    await new Promise((r) => setTimeout(r, 300));
    await adminA.sliverAction(sliver.id, 'stop');
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    stop.abort();
    await streamB;
    expect(seen.map((e) => e.sliver)).toEqual([sliver.id]);
  });

  /** The ApiError code of a call that must fail. */
  const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (err: unknown) => (err instanceof ApiError ? `${err.status} ${err.code}` : String(err)));

  it('a node key revoked through one replica fails at once on the other, also a long-poll waiting there', async () => {
    const adminA = new PlanetLiteClient({ registry: a });
    await adminA.login(ADMIN.email, ADMIN.password);
    await adminA.createSite({ login_base: 'revo', name: 'Revo', max_slices: 5, max_slivers: 5 });
    const tok = await adminA.createEnrollmentToken('revo');
    const enrolled = await new PlanetLiteClient({ registry: b }).enroll({
      token: tok.token, hostname: 'revo1.test', address: '192.0.2.31',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 512, disk_mb: 1024 },
    });
    const node = new PlanetLiteClient({ registry: b, token: enrolled.node_key });
    const first = await node.desiredState(enrolled.node_id);
    const poll = codeOf(node.desiredState(enrolled.node_id, { etag: first.etag, wait: 30 }));
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    await adminA.revokeNodeKey(enrolled.node_id);
    expect(await poll).toBe('401 node_key_revoked');
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await codeOf(node.putObservedState(enrolled.node_id, { slivers: [] }))).toBe('401 node_key_revoked');

    // A user's token ended through one replica is refused by the other.
    const adminB = new PlanetLiteClient({ registry: b, token: adminA.token });
    await adminB.me();
    await adminA.logout();
    expect(await codeOf(adminB.me())).toBe('401 token_invalid');
  });
});
