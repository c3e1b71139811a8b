// The agents' fault campaign: a three-node testbed on one machine (a shared "internet" bridge,
// three node namespaces, a registry in this process), every node's agent a `planetlite-agent run`
// process of its own. Slivers are created, changed (memory, rate cap), restarted, reset, stopped,
// started and deleted without pause, while agents are SIGKILLed at random moments (alone or with
// the host commands they were running). Then every sliver must reach its desired state, live
// limits included; then everything is deleted and no node may keep anything of a sliver
// (leaks.ts). Used by scripts/chaos/agents.ts (long) and test/e2e/chaos-agents.test.ts (short).
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiError, PlanetLiteClient, trustRegistry, type Sliver } from '@planetlite/api';
import { containerName } from '@planetlite/instance';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { removeNode } from './node.ts';
import { countLeaks, nodeLeaks, poolLoopLeaks, type LeakKind } from './leaks.ts';
import { AgentProcess, AGENT_BIN, exec, joinInternet, makeInternet, removeInternet, removeLxcCgroups, until, type Internet } from './testbed.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADMIN = { email: 'admin@chaos.test', password: 'chaos-admin-password' };

export interface AgentChaosOptions {
  /** SIGKILLs to send in all. */
  kills: number;
  /** Slices churned (each may have a sliver on every node). */
  slices?: number;
  /** PostgreSQL URL of a database of its own; default: the registry's embedded PGlite. */
  databaseUrl?: string;
  /** Random seed (the run prints it; the same seed gives the same choices, not the same timing). */
  seed?: number;
  /** Progress lines. */
  say?: (line: string) => void;
}

export interface AgentChaosFigures {
  seed: number;
  kills: number;
  /** Of which with the agent's whole process group (the host commands it was running too). */
  groupKills: number;
  /** Churn requests the registry accepted, by kind. */
  operations: Record<string, number>;
  /** Slivers alive at the end of the churn, and those that reached their desired state (state,
   * no error, live memory limit) afterwards. */
  slivers: number;
  converged: number;
  notConverged: string[];
  /** Slivers created over the run. */
  created: number;
  /** What the leak check saw while the slivers were still there, by kind (it must see them). */
  before: Record<LeakKind, number>;
  /** Leaks once every slice was deleted, by kind, and the lines found. */
  leaks: Record<LeakKind, number>;
  leakLines: string[];
  seconds: { churn: number; converge: number; cleanup: number };
}

interface ChaosNode {
  n: number;
  ns: string;
  stateDir: string;
  pool: string;
  subnet: string;
  id: string;
  agent: AgentProcess | null;
}

/** A small seeded PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runAgentChaos(opts: AgentChaosOptions): Promise<AgentChaosFigures> {
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 31);
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const say = opts.say ?? (() => undefined);
  const tag = Math.random().toString(36).slice(2, 7).padEnd(5, '0');
  // Only 198.18.50-59 and 10.180-189.n.0/24 (this campaign's share of the address plan).
  const octet = 50 + Math.floor(Math.random() * 10);
  const subnetBase = 180 + Math.floor(Math.random() * 10);
  const dir = mkdtempSync(join(tmpdir(), 'pl-chaos-'));
  chmodSync(dir, 0o711); // unprivileged slivers traverse it to their lxcpath
  const nodes: ChaosNode[] = [1, 2, 3].map((n) => ({ n, ns: `pl-chn${n}-${tag}`, stateDir: join(dir, `node${n}`), pool: join(dir, `node${n}-pool.img`), subnet: `10.${subnetBase}.${n}.0/24`, id: '', agent: null }));
  const sliceNames = Array.from({ length: opts.slices ?? 4 }, (_, i) => `ch_s${i}`);
  const created = new Set<string>();
  const operations: Record<string, number> = {};
  let internet: Internet | null = null;
  let registry: RunningRegistry | null = null;
  let kills = 0;
  let groupKills = 0;

  const startAgent = (c: ChaosNode): AgentProcess => {
    c.agent = new AgentProcess(['run', '--state-dir', c.stateDir, '--pool', c.pool, '--pool-size', '1G', '--sliver-subnet', c.subnet, '--netns', c.ns, '--vm', 'off', '--watchdog-cooldown', '30', '--log-level', 'info']);
    return c.agent;
  };

  try {
    say(`seed ${seed}; testbed ${tag}: 198.18.${octet}.0/24, slivers in 10.${subnetBase}.1-3.0/24`);
    internet = await makeInternet({ tag, octet });
    registry = await startRegistry({ listen: '127.0.0.1:0', dataDir: join(dir, 'registry'), ...(opts.databaseUrl ? { databaseUrl: opts.databaseUrl } : {}), adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false, logLevel: 'warn' });
    trustRegistry(registry.url, registry.ca!);
    const admin = new PlanetLiteClient({ registry: registry.url });
    await admin.login(ADMIN.email, ADMIN.password);
    await admin.createSite({ login_base: 'ch', name: 'Chaos', max_slices: sliceNames.length, max_slivers: sliceNames.length * 3 });
    for (const name of sliceNames) await admin.createSlice({ name, description: 'agent chaos', url: 'https://example.org/chaos', image: 'tiny', resources: { memory_mb: 128, net_kbps: 5000, disk_mb: 256 } });
    const image = join(dir, 'tiny.tar');
    await exec('bash', [join(ROOT, 'infra/images/tiny/build.sh'), image], 300_000);
    for (const c of nodes) {
      const address = await joinInternet(internet, { ns: c.ns, host: 10 + c.n, link: `pc${tag}${c.n}` });
      const token = (await admin.createEnrollmentToken('ch')).token;
      await exec(process.execPath, [AGENT_BIN, 'enroll', '--registry', registry.url, '--token', token, '--ca-pin', registry.caPin!, '--address', address, '--hostname', `node${c.n}.${tag}.chaos.test`, '--state-dir', c.stateDir]);
      c.id = (JSON.parse(readFileSync(join(c.stateDir, 'node.json'), 'utf8')) as { node_id: string }).node_id;
      await exec(process.execPath, [AGENT_BIN, 'image', 'import', 'tiny', image, '--state-dir', c.stateDir, '--pool', c.pool, '--pool-size', '1G'], 300_000);
      await startAgent(c).waitFor('agent running', (r) => r.msg === 'agent running', { ms: 120_000 });
    }
    say('three agents running; churn and kills start');

    // The churn: one request at a time, at random, until the kills are done.
    const t0 = Date.now();
    let churning = true;
    const note = (op: string) => (operations[op] = (operations[op] ?? 0) + 1);
    const churn = (async () => {
      while (churning) {
        try {
          const slice = pick(sliceNames);
          const slivers = await admin.listSlivers(slice);
          const live = slivers.filter((s) => s.desired !== 'deleted');
          const free = nodes.filter((c) => !slivers.some((s) => s.node_id === c.id));
          const op = pick(['create', 'create', 'change', 'action', 'action', 'delete']);
          if ((op === 'create' || !live.length) && free.length) {
            created.add((await admin.createSliver(slice, pick(free).id)).id);
            note('create');
          } else if (op === 'change') {
            await admin.updateSlice(slice, { resources: { memory_mb: pick([96, 128, 160, 192]), net_kbps: pick([2000, 5000, 8000]) } });
            note('change');
          } else if (op === 'action' && live.length) {
            const action = pick(['restart', 'reset', 'stop', 'start', 'start'] as const);
            await admin.sliverAction(pick(live).id, action);
            note(action);
          } else if (op === 'delete' && live.length) {
            await admin.deleteSliver(pick(live).id);
            note('delete');
          }
        } catch (err) {
          // A conflict (a sliver being deleted, one sliver per node) is part of the churn.
          if (!(err instanceof ApiError)) throw err;
          note(`refused ${err.code}`);
        }
        await sleep(300 + rnd() * 1200);
      }
    })();

    // The kills: at random moments, not at chosen steps.
    for (let k = 0; k < opts.kills; k++) {
      await sleep(1000 + rnd() * 5000);
      const c = pick(nodes);
      const group = rnd() < 0.5;
      c.agent?.kill('SIGKILL', group);
      await c.agent?.exited;
      kills++;
      if (group) groupKills++;
      say(`kill ${kills}/${opts.kills}: node ${c.n}${group ? ' (with its commands)' : ''}`);
      await sleep(rnd() * 1500);
      startAgent(c);
    }
    churning = false;
    await churn;
    const churnSeconds = (Date.now() - t0) / 1000;
    for (const c of nodes) await c.agent!.waitFor('agent running', (r) => r.msg === 'agent running', { ms: 120_000 });

    // Convergence: every sliver in its desired state with no error, its live memory limit the slice's.
    const t1 = Date.now();
    const want = new Map<string, { sliver: Sliver; memoryMb: number }>();
    for (const name of sliceNames) {
      const memoryMb = (await admin.getSlice(name)).resources.memory_mb;
      for (const s of await admin.listSlivers(name)) if (s.desired !== 'deleted') want.set(s.id, { sliver: s, memoryMb });
    }
    const pending = new Map<string, string>();
    await until('every sliver to converge', async () => {
      pending.clear();
      for (const [id, w] of want) {
        const s = await admin.getSliver(id);
        const state = s.desired === 'running' ? 'running' : 'stopped';
        if (s.state !== state || s.error) {
          pending.set(id, `${s.state} (desired ${s.desired})${s.error ? `: ${s.error}` : ''}`);
          continue;
        }
        if (state === 'running') {
          const c = nodes.find((x) => x.id === s.node_id)!;
          const live = await liveMemoryMiB(id);
          if (live !== w.memoryMb) pending.set(id, `running on node ${c.n} with a live memory limit of ${live} MiB, not ${w.memoryMb}`);
        }
      }
      return pending.size === 0;
    }, 240_000).catch(() => undefined);
    const convergeSeconds = (Date.now() - t1) / 1000;
    say(`${want.size - pending.size}/${want.size} slivers converged in ${convergeSeconds.toFixed(0)} s`);

    // The leak check sees the slivers that are there (else its 0 at the end would prove nothing).
    const scopes = nodes.map((c) => ({ stateDir: c.stateDir, ns: c.ns, poolFile: c.pool, ids: created }));
    const before = countLeaks(await Promise.all(scopes.map(nodeLeaks))).byKind;

    // Everything deleted: the registry forgets every sliver, each node keeps nothing.
    const t2 = Date.now();
    for (const name of sliceNames) await admin.deleteSlice(name).catch(() => undefined);
    await until('the registry to forget every slice', async () => {
      for (const name of sliceNames) if (await admin.getSlice(name).then(() => true, () => false)) return false;
      return true;
    }, 180_000).catch(() => undefined);
    await until('every node to be clean', async () => countLeaks(await Promise.all(scopes.map(nodeLeaks))).total === 0, 60_000).catch(() => undefined);
    const leaks = countLeaks(await Promise.all(scopes.map(nodeLeaks)));
    const cleanupSeconds = (Date.now() - t2) / 1000;
    return {
      seed, kills, groupKills, operations, slivers: want.size, converged: want.size - pending.size,
      notConverged: [...pending].map(([id, why]) => `${id}: ${why}`), created: created.size,
      before, leaks: leaks.byKind, leakLines: leaks.lines,
      seconds: { churn: churnSeconds, converge: convergeSeconds, cleanup: cleanupSeconds },
    };
  } finally {
    for (const c of nodes) {
      if (c.agent?.running) await c.agent.stop();
    }
    const containers = new Set([...created].map((id) => containerName(id)));
    for (const c of nodes) for (const name of await readdir(join(c.stateDir, 'lxc')).catch(() => [] as string[])) containers.add(name);
    for (const c of nodes) await removeNode({ stateDir: c.stateDir, ns: c.ns, poolFile: c.pool }).catch(() => undefined);
    await removeLxcCgroups(containers).catch(() => undefined);
    for (const c of nodes) for (const l of await poolLoopLeaks(c.pool)) say(`loop device left on the pool file after removal: ${l}`);
    await removeInternet(internet ?? { ns: `pl-inet-${tag}` });
    await registry?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The live memory limit of a sliver's container, from the host's memory cgroup (v1), in MiB. */
async function liveMemoryMiB(id: string): Promise<number | null> {
  const out = await exec('find', ['/sys/fs/cgroup/memory', '-maxdepth', '3', '-type', 'd', '-name', `lxc.payload.${containerName(id)}`]).catch(() => '');
  const d = out.split('\n')[0];
  if (!d) return null;
  return Number(readFileSync(join(d, 'memory.limit_in_bytes'), 'utf8')) / (1024 * 1024);
}
