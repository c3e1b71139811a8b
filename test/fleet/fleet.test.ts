// A few hundred simulated agents over two HTTPS replicas of one PostgreSQL and one Redis; replica B
// is killed mid-run. Every change made through A reaches its agent, and every agent ends with the
// document A serves. No timing assertions: scripts/bench/fleet.ts measures; this proves.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { PlanetLiteClient, trustRegistry } from '@planetlite/api';
import { createTestDatabase } from '../harness/services.ts';
import { startRegistryProcess, type RegistryProcess } from '../harness/registry-process.ts';
import { ChangeTracker, Fleet, inBatches, type SimAgent } from '../../scripts/bench/fleet-agents.ts';

const AGENTS = 300;
const ADMIN = { email: 'fleet@planetlite.test', password: 'fleet-password' };
const SITE = 'fleet';

describe('a fleet of agents over two replicas, one killed', () => {
  const replicas: RegistryProcess[] = [];
  let tlsDir: string;
  let fleet: Fleet | undefined;
  let admin: PlanetLiteClient;

  beforeAll(async () => {
    tlsDir = mkdtempSync(join(tmpdir(), 'pl-fleet-test-'));
    const env = {
      DATABASE_URL: await createTestDatabase(inject('pgUrl'), 'fleet'),
      REDIS_URL: inject('redisUrl'),
      PLANETLITE_ADMIN_EMAIL: ADMIN.email,
      PLANETLITE_ADMIN_PASSWORD: ADMIN.password,
    };
    for (let i = 0; i < 2; i++) replicas.push(await startRegistryProcess(env, { tlsDataDir: tlsDir, timeoutMs: 60_000 }));
    for (const r of replicas) trustRegistry(r.url, r.ca!);
    admin = new PlanetLiteClient({ registry: replicas[0]!.url });
    await admin.login(ADMIN.email, ADMIN.password);
  });

  afterAll(async () => {
    await fleet?.stop();
    for (const r of replicas) await r.stop();
    rmSync(tlsDir, { recursive: true, force: true });
  });

  it('brings every change to its agent across a replica kill, and every agent ends current', async () => {
    await admin.createSite({ login_base: SITE, name: 'Fleet', max_slices: 100, max_slivers: 10_000 });
    for (const s of ['seed', 'late']) await admin.createSlice({ name: `${SITE}_${s}`, description: 'fleet', url: 'https://example.org' });
    const enrolled = await inBatches(Array.from({ length: AGENTS }, (_, i) => i), 8, async (i) => {
      const tok = await admin.createEnrollmentToken(SITE);
      const r = await new PlanetLiteClient({ registry: replicas[i % 2]!.url }).enroll({
        token: tok.token, hostname: `node${i}.fleet.test`, address: `10.0.${i >> 8}.${i & 255}`,
        capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 8, memory_mb: 65536, disk_mb: 100000 },
      });
      await admin.createSliver(`${SITE}_seed`, r.node_id);
      return { ...r, replica: i % 2 };
    });

    const tracker = new ChangeTracker();
    fleet = new Fleet(replicas.map((r) => ({ url: r.url, ca: r.ca })), 32, {
      waitSeconds: 10, reportSeconds: 5, onDocument: (a, doc, at) => tracker.seen(a, doc, at),
    });
    for (const e of enrolled) fleet.add(e.node_id, e.node_key, e.replica);
    fleet.start();
    await until(() => fleet!.agents.every((a) => a.doc?.slivers.length === 1), 60_000, 'every agent holds its first document');

    const onB = fleet.agents.filter((a) => a.replica === 1);
    expect(onB.length).toBe(AGENTS / 2);
    const stop = async (a: SimAgent) => {
      const s = a.doc!.slivers[0]!;
      tracker.expectAction(a.nodeId, s.id, 'stopped', performance.now());
      await admin.sliverAction(s.id, 'stop');
    };
    // Before the kill: stop the seed sliver of the first 50 agents on B.
    await inBatches(onB.slice(0, 50), 8, stop);
    await tracker.settled(30_000);

    replicas[1]!.proc.kill('SIGKILL');
    // While B's agents move to A: stop the next 50, and give 50 a new sliver.
    await inBatches(onB.slice(50, 100), 8, stop);
    await inBatches(onB.slice(100, 150), 8, async (a) => {
      tracker.expectSliver(a.nodeId, `${SITE}_late`, performance.now());
      await admin.createSliver(`${SITE}_late`, a.nodeId);
    });
    await tracker.settled(60_000);
    expect(tracker.made).toBe(150);
    expect(tracker.latenciesMs.length).toBe(150);

    await until(() => onB.every((a) => a.replica === 0 && a.answered > 0), 30_000, 'every agent of B answered by A');
    const stale: string[] = [];
    await inBatches(fleet.agents, 16, async (a) => {
      const { etag, doc } = await fleet!.fetchDocument(a, 0);
      if (etag !== a.etag) stale.push(a.nodeId);
      expect(a.doc).toEqual(doc);
    });
    expect(stale).toEqual([]);
    expect(fleet.stats.moves).toBe(AGENTS / 2);
    expect(fleet.stats.reports).toBeGreaterThan(0);
  }, 120_000);
});

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
