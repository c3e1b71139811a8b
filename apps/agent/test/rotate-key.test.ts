// planetlite-agent rotate-key against a real registry: the enrollment file gets a new key
// atomically, and a running desired-state sync switches to it without losing contact.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createLogger } from '@planetlite/core';
import { openDatabase, type Database } from '@planetlite/db';
import { PlanetLiteClient, trustRegistry, type DesiredState } from '@planetlite/api';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { DesiredStateSync, StateDir } from '../src/index.js';

const run = promisify(execFile);
const AGENT_MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const ADMIN = { email: 'admin@rotate.test', password: 'admin-password' };

describe('planetlite-agent rotate-key', () => {
  let dir: string;
  let db: Database;
  let registry: RunningRegistry;
  let admin: PlanetLiteClient;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pl-rotate-'));
    db = await openDatabase({});
    registry = await startRegistry({ db, adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false, logLevel: 'silent' });
    trustRegistry(registry.url, registry.ca!);
    admin = new PlanetLiteClient({ registry: registry.url });
    await admin.login(ADMIN.email, ADMIN.password);
    await admin.createSite({ login_base: 'rot', name: 'Rot', max_slices: 5, max_slivers: 5 });
  });
  afterAll(async () => {
    await registry?.close();
    await db?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A node enrolled at site rot, with its enrollment file in a state dir of its own (as `enroll` writes it). */
  async function enrolledNode(hostname: string, address: string) {
    const tok = await admin.createEnrollmentToken('rot');
    const enrolled = await new PlanetLiteClient({ registry: registry.url }).enroll({
      token: tok.token, hostname, address, capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 512, disk_mb: 1024 },
    });
    const state = new StateDir(join(dir, hostname));
    state.writeCa(registry.ca);
    state.writeEnrollment({ registry: registry.url, node_id: enrolled.node_id, node_key: enrolled.node_key, address, hostname, site: 'rot', enrolled_at: new Date().toISOString(), ca_pin: registry.caPin });
    return { enrolled, state };
  }

  it('writes a new key into the enrollment file, and a running sync switches to it without losing contact', async () => {
    const { enrolled, state } = await enrolledNode('rot1.test', '192.0.2.40');

    const client = new PlanetLiteClient({ registry: registry.url, token: enrolled.node_key });
    const docs: DesiredState[] = [];
    const sync = new DesiredStateSync({ client, nodeId: enrolled.node_id, state, log: createLogger({ name: 'sync', level: 'silent' }), waitSeconds: 1, onDesired: (d) => void docs.push(d) });
    await sync.start();
    try {
      for (let i = 0; i < 100 && docs.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(docs.length).toBeGreaterThan(0);

      const out = await run(process.execPath, [AGENT_MAIN, 'rotate-key', '--state-dir', state.dir], { timeout: 60_000 });
      expect(out.stdout).toContain(`node ${enrolled.node_id} has a new key from ${registry.url}`);
      const written = state.readEnrollment();
      expect(written.node_key).toMatch(/^pln_/);
      expect(written.node_key).not.toBe(enrolled.node_key);
      expect(written).toMatchObject({ node_id: enrolled.node_id, hostname: 'rot1.test' });
      expect(statSync(state.enrollmentFile).mode & 0o777).toBe(0o600);
      expect(readFileSync(state.enrollmentFile, 'utf8').endsWith('\n')).toBe(true);

      // The sync picks the new key up by itself.
      for (let i = 0; i < 100 && client.token !== written.node_key; i++) await new Promise((r) => setTimeout(r, 50));
      expect(client.token).toBe(written.node_key);

      // Once the grace of the old key is over, the node still hears of changes (it uses the new key).
      await db.query("UPDATE nodes SET prev_key_until = now() - interval '1 second' WHERE id = $1", [enrolled.node_id]);
      await expect(new PlanetLiteClient({ registry: registry.url, token: enrolled.node_key }).getNode(enrolled.node_id)).rejects.toMatchObject({ status: 401 });
      await admin.createSlice({ name: 'rot_exp', description: 'd', url: 'u' });
      const sliver = await admin.createSliver('rot_exp', enrolled.node_id);
      for (let i = 0; i < 100 && !docs.at(-1)?.slivers.some((s) => s.id === sliver.id); i++) await new Promise((r) => setTimeout(r, 50));
      expect(docs.at(-1)?.slivers.map((s) => s.id)).toEqual([sliver.id]);
      expect(sync.reachable).toBe(true);
    } finally {
      await sync.stop();
    }
  });

  it('a sync started with a client holding a replaced key uses the enrollment file\'s key', async () => {
    const { enrolled, state } = await enrolledNode('rot2.test', '192.0.2.41');
    await run(process.execPath, [AGENT_MAIN, 'rotate-key', '--state-dir', state.dir], { timeout: 60_000 });
    await db.query("UPDATE nodes SET prev_key_until = now() - interval '1 second' WHERE id = $1", [enrolled.node_id]);
    // This client still holds the old, now refused key.
    const client = new PlanetLiteClient({ registry: registry.url, token: enrolled.node_key });
    const docs: DesiredState[] = [];
    const sync = new DesiredStateSync({ client, nodeId: enrolled.node_id, state, log: createLogger({ name: 'sync', level: 'silent' }), waitSeconds: 1, onDesired: (d) => void docs.push(d) });
    await sync.start();
    try {
      for (let i = 0; i < 100 && docs.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(docs[0]?.node_id).toBe(enrolled.node_id);
      expect(client.token).toBe(state.readEnrollment().node_key);
    } finally {
      await sync.stop();
    }
  });

  it('says in one line when the state dir holds no enrollment', async () => {
    const err = await run(process.execPath, [AGENT_MAIN, 'rotate-key', '--state-dir', join(dir, 'none')], { timeout: 60_000 }).then(() => null, (e: { code: number; stderr: string }) => e);
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim().split('\n')).toHaveLength(1);
    expect(err?.stderr).toMatch(/^planetlite-agent: .*node\.json is missing: enroll this node first/);
  });
});
