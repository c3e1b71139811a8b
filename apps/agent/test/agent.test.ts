// The agent against a real registry: enrollment, desired state pushed in well under a second,
// the last good state kept on disk and used while the registry is down, observed state reported.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { createLogger } from '@planetlite/core';
import { PlanetLiteClient, caPinOf, trustRegistry } from '@planetlite/api';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { Agent, enroll, StateDir } from '../src/index.js';
import { freePort } from '../../../test/harness/services.ts';

const ADMIN = { email: 'admin@agent.test', password: 'agent-admin-pw' };
const AGENT_MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const log = createLogger({ name: 'agent-test', level: 'silent' });

let dir: string;
let port: number;
let registry: RunningRegistry | null = null;
let admin: PlanetLiteClient;

async function up(): Promise<void> {
  registry = await startRegistry({ listen: `127.0.0.1:${port}`, dataDir: join(dir, 'registry'), adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false });
}
async function down(): Promise<void> {
  await registry?.close();
  registry = null;
}
async function until<T>(what: string, fn: () => T | Promise<T>, ms = 10_000): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pl-agent-'));
  port = await freePort();
  await up();
  trustRegistry(registry!.url, registry!.ca!);
  admin = new PlanetLiteClient({ registry: registry!.url });
  await admin.login(ADMIN.email, ADMIN.password);
  await admin.createSite({ login_base: 'lab', name: 'Lab', max_slices: 10, max_slivers: 10 });
});
afterAll(async () => {
  await down();
  rmSync(dir, { recursive: true, force: true });
});

describe('planetlite-agent enroll', () => {
  it('stores the node key (mode 0600) and the registry settings; a used token fails with one line', async () => {
    const token = (await admin.createEnrollmentToken('lab')).token;
    const stateDir = join(dir, 'cli-node');
    const args = [AGENT_MAIN, 'enroll', '--registry', registry!.url, '--token', token, '--ca-pin', registry!.caPin!, '--address', '192.0.2.50', '--hostname', 'cli.lab.test', '--state-dir', stateDir];
    const { stdout } = await promisify(execFile)(process.execPath, args);
    expect(stdout).toMatch(/^enrolled cli\.lab\.test as node [0-9a-f-]{36} of site lab/);
    const e = new StateDir(stateDir).readEnrollment();
    expect(e).toMatchObject({ hostname: 'cli.lab.test', address: '192.0.2.50', site: 'lab', registry: registry!.url, ca_pin: registry!.caPin });
    expect(caPinOf(readFileSync(join(stateDir, 'registry-ca.pem'), 'utf8'))).toBe(registry!.caPin);
    expect(e.node_key).toMatch(/^pln_/);
    expect(statSync(join(stateDir, 'node.json')).mode & 0o777).toBe(0o600);
    const node = await admin.getNode(e.node_id);
    // Nothing is claimed at enrollment: lxc and kvm come with the first report of a running
    // agent (what its drivers' checks found); the architecture is the machine's.
    expect(node.capabilities).toEqual({ lxc: false, kvm: false, kvm_accel: null, arch: execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim() });
    const again = await promisify(execFile)(process.execPath, args).catch((err: { code: number; stderr: string }) => err);
    expect((again as { code: number }).code).toBe(1);
    expect((again as { stderr: string }).stderr).toMatch(/^planetlite-agent: enrollment token was already used \(token_invalid\)\n$/);
  });
});

describe('planetlite-agent run', () => {
  let agent: Agent;
  let stateDir: string;
  let nodeId: string;

  beforeAll(async () => {
    stateDir = join(dir, 'node1');
    const token = (await admin.createEnrollmentToken('lab')).token;
    // Enrolled as LXC-capable so that the registry will place a sliver for the sync to carry.
    const e = await enroll({ registry: registry!.url, token, caPin: registry!.caPin!, address: '192.0.2.51', hostname: 'node1.lab.test', stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null } });
    nodeId = e.node_id;
    agent = new Agent({ stateDir, log, waitSeconds: 30, drivers: null });
    await agent.start();
  });
  afterAll(async () => {
    await agent.stop();
  });

  it('reports in, so the node is online', async () => {
    await until('node online', async () => (await admin.getNode(nodeId)).state === 'online');
  });

  it('receives a new sliver by push, well before its 30 s long-poll would time out, and caches it on disk', async () => {
    await admin.createSlice({ name: 'lab_sync', description: 'd', url: 'u' });
    await until('the long-poll to be waiting', () => agent.sync.current !== null);
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    const sliver = await admin.createSliver('lab_sync', nodeId);
    await until('the sliver in the desired state', () => agent.sync.current?.slivers.some((s) => s.id === sliver.id), 10_000);
    expect(Date.now() - started).toBeLessThan(10_000);
    const cached = JSON.parse(readFileSync(join(stateDir, 'desired-state.json'), 'utf8'));
    expect(cached.state.slivers.map((s: { id: string }) => s.id)).toEqual([sliver.id]);
    expect(cached.etag).toMatch(/^"/);
  });

  it('keeps one report waiting behind a slow one: what is asked meanwhile joins it, as a whole report if any ask was', async () => {
    const client = agent.client;
    const real = client.putObservedState.bind(client);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const partial: boolean[] = [];
    client.putObservedState = async (id, body) => {
      partial.push(body.partial === true);
      if (partial.length === 1) await held;
      return real(id, body);
    };
    try {
      const first = agent.report({ fresh: false });
      await until('a report to be under way', () => partial.length === 1);
      // A clock tick and two changes while the registry is slow.
      const asks = [agent.report({ fresh: false }), agent.report(), agent.report({ fresh: false })];
      release();
      await Promise.all([first, ...asks]);
      expect(partial.slice(1)).toEqual([false]);
    } finally {
      client.putObservedState = real;
    }
  });

  it('keeps its last desired state while the registry is down, and catches up when it is back', async () => {
    const before = agent.sync.current;
    await down();
    await until('the agent to notice', () => !agent.sync.reachable);
    expect(agent.sync.current).toEqual(before);

    // A restarted agent with the registry still down works from the cache on disk.
    const second = new Agent({ stateDir, log, waitSeconds: 30, drivers: null });
    await second.start();
    expect(second.sync.current).toEqual(before);
    await second.stop();

    await up();
    const [sliver] = before!.slivers;
    await new PlanetLiteClient({ registry: registry!.url, token: admin.token }).sliverAction(sliver!.id, 'stop');
    await until('the change after the outage', () => agent.sync.current?.slivers[0]?.desired === 'stopped', 15_000);
    expect(agent.sync.reachable).toBe(true);
  });

  it('refuses to run without an enrollment, saying how to enroll', () => {
    expect(() => new Agent({ stateDir: join(dir, 'nowhere'), log, drivers: null })).toThrow(/planetlite-agent enroll --registry URL --token TOKEN/);
  });
});

describe('the pinned registry', () => {
  const enrollArgs = (stateDir: string, token: string, pin: string, url = registry!.url) =>
    [AGENT_MAIN, 'enroll', '--registry', url, '--token', token, '--ca-pin', pin, '--address', '192.0.2.60', '--hostname', 'pin.lab.test', '--state-dir', stateDir];
  const fails = (args: string[]) => promisify(execFile)(process.execPath, args).then(() => null, (err: { code: number; stderr: string }) => err);

  it('refuses a registry whose CA is not the pinned one, sends no token and writes nothing', async () => {
    const token = (await admin.createEnrollmentToken('lab')).token;
    const stateDir = join(dir, 'wrong-pin');
    const err = await fails(enrollArgs(stateDir, token, `sha256:${'ab'.repeat(32)}`));
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/^planetlite-agent: the registry at https:\/\/127\.0\.0\.1:\d+ presents CA sha256:[0-9a-f]{64}, not the pinned sha256:(ab){32}: refusing it/);
    expect(() => statSync(stateDir)).toThrow();
    // The token was never sent, so it still enrolls a node.
    await promisify(execFile)(process.execPath, enrollArgs(stateDir, token, registry!.caPin!));
    expect(new StateDir(stateDir).readEnrollment().ca_pin).toBe(registry!.caPin);
  });

  it('without a pin, trusts only the system CAs: an own-CA registry is refused with what to do', async () => {
    const token = (await admin.createEnrollmentToken('lab')).token;
    const args = enrollArgs(join(dir, 'no-pin'), token, 'x').filter((a, i, all) => a !== '--ca-pin' && all[i - 1] !== '--ca-pin');
    const err = await fails(args);
    expect(err?.stderr).toMatch(/not trusted by this machine \(SELF_SIGNED_CERT_IN_CHAIN\): pass --ca-pin sha256:/);
    expect(() => statSync(join(dir, 'no-pin'))).toThrow();
  });

  it('an impostor at the same address (another CA) gets neither an enrollment nor a sync', async () => {
    const token = (await admin.createEnrollmentToken('lab')).token;
    const stateDir = join(dir, 'pinned-node');
    const e = await enroll({ registry: registry!.url, token, caPin: registry!.caPin!, address: '192.0.2.61', hostname: 'pinned.lab.test', stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null } });
    const lines: { msg: string; code?: string }[] = [];
    const captured = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    const agent = new Agent({ stateDir, log: captured, waitSeconds: 1, drivers: null });
    await agent.start();
    try {
      await until('the pinned agent to sync', () => agent.sync.reachable && agent.sync.current !== null);
      await down();
      const impostor = await startRegistry({ listen: `127.0.0.1:${port}`, dataDir: join(dir, 'impostor'), adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false });
      try {
        expect(impostor.caPin).not.toBe(e.ca_pin);
        await until('the agent to refuse the impostor', () => lines.find((l) => l.msg === 'the registry presents a certificate its pinned CA did not sign: refusing it'), 15_000);
        expect(agent.sync.reachable).toBe(false);
        // A node enrolling with the real pin refuses the impostor too (it serves its own CA).
        const err = await fails(enrollArgs(join(dir, 'mitm'), 'ple_anything', e.ca_pin!, impostor.url));
        expect(err?.stderr).toMatch(/presents CA sha256:[0-9a-f]{64}, not the pinned/);
        expect(() => statSync(join(dir, 'mitm'))).toThrow();
      } finally {
        await impostor.close();
      }
    } finally {
      await agent.stop();
      if (!registry) await up();
    }
  });
});
