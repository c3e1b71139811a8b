// Sliver start-up and density on one node: time from POST …/slivers to an SSH banner on the
// forwarded port (through the registry and the agent), beside the floor (the same host
// operations scripted by hand in scripts/bench/floor.sh: btrfs snapshot + veth + one nftables
// DNAT rule + a plain lxc-start, no PlanetLite code) and the bare chain driven directly through
// the agent's drivers, in one run; then host memory and exclusive disk per idle sliver. The timed slivers are made through
// two replicas of one registry, HTTPS (its own CA, the default) and plain HTTP, in alternating
// blocks, so that what TLS costs on that path is measured in the same run.
//
//   node scripts/bench/sliver.ts [--slivers 50] [--density 1000] [--warm-pool 4] [--sliver-roots layered|snapshot] [--image tiny|debian12] [--registry pglite|postgres] [--step 250] [--write docs/benchmarks.md] [--svg docs/bench/sliver-startup.svg]
//
// --warm-pool K: then K spares kept by the agent's warm pool (warm-pool.ts), and --slivers more
// slivers timed one at a time, each handed out from a full pool.
// --slivers: how many are created one at a time and timed through each replica; --density: how many idle slivers the
// node holds at the end (the rest are created in a burst through the API), for the memory figures.
// --registry: pglite (default) runs the registry embedded in this process; postgres runs it as two
// `planetlite-registry serve` processes on a real PostgreSQL and Redis (the test harness's).
// --sliver-roots: the agent's setting (default layered: the slivers share the image's page cache).
// --step: the density slivers are requested in bursts of this many (default an eighth of them);
// after each, 3 are timed one at a time at that node size (--svg FILE plots them).
//
// PLANETLITE_BENCH_LOG: log level of the benchmark and the agent; PLANETLITE_BENCH_AGENT_LOG: the
// agent's alone (info: each sliver's build with the time of each step). PLANETLITE_BENCH_HEAP=DIR:
// the agent writes a heap snapshot into DIR after the idle minute (what its RSS holds).
// Needs root and the build (bash scripts/setup.sh). Everything lives in namespaces and temp
// dirs it makes, and is removed at the end.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { PlanetLiteClient, caPinOf, trustRegistry } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { startRegistry } from '@planetlite/registry';
import { openDatabase } from '@planetlite/db';
import { memoryFanout } from '@planetlite/fanout';
import { enroll, importImage, openDrivers, loadSettings, readLedger } from '@planetlite/agent';
import { makeNodeNamespace, removeNode } from '../../test/harness/node.ts';
import { startPostgres, startRedis } from '../../test/harness/services.ts';
import { startRegistryProcess } from '../../test/harness/registry-process.ts';
import { appendResults, lineChart } from './results.ts';
import { profileProcess, profileSelf, saveProfile } from './profile.ts';

const { values: args } = parseArgs({ options: { slivers: { type: 'string', default: '50' }, density: { type: 'string' }, 'warm-pool': { type: 'string' }, 'sliver-roots': { type: 'string', default: 'layered' }, step: { type: 'string' }, image: { type: 'string', default: 'tiny' }, registry: { type: 'string', default: 'pglite' }, write: { type: 'string' }, svg: { type: 'string' }, profile: { type: 'string' } } });
const ROOTS = args['sliver-roots'] as 'layered' | 'snapshot';
const IMAGE = args.image as 'tiny' | 'debian12';
if (IMAGE !== 'tiny' && IMAGE !== 'debian12') throw new Error("--image is 'tiny' or 'debian12'");
if (ROOTS !== 'layered' && ROOTS !== 'snapshot') throw new Error("--sliver-roots is 'layered' or 'snapshot'");
const REGISTRY = args.registry as 'pglite' | 'postgres';
if (REGISTRY !== 'pglite' && REGISTRY !== 'postgres') throw new Error("--registry is 'pglite' or 'postgres'");
const N = Number(args.slivers);
const M = Math.max(2 * N, Number(args.density ?? 2 * N));
const POOL = Number(args['warm-pool'] ?? 0);
const ROOT = new URL('../../', import.meta.url).pathname;
const NODE = 'pl-bench-node';
const PUBLIC = '198.18.251.1';
const log = createLogger({ name: 'bench', level: process.env.PLANETLITE_BENCH_LOG ?? 'warn' });

/**
 * Milliseconds until an SSH banner arrives on PUBLIC:port. A connect that is not answered within
 * 50 ms is abandoned and tried again (before the sliver's link is up a SYN is not answered at all,
 * and waiting out TCP's own retry would measure the probe, not the sliver); a connection that is
 * accepted gets 2 s to send its banner. Attempts start every 5 ms.
 */
async function banner(port: number, started: number, timeoutMs = 60_000, everyMs = 5): Promise<number> {
  for (;;) {
    const got = await new Promise<boolean>((resolve) => {
      const s = connect({ host: PUBLIC, port });
      const done = (ok: boolean) => { clearTimeout(t); s.destroy(); resolve(ok); };
      let t = setTimeout(() => done(false), 50);
      s.on('connect', () => { clearTimeout(t); t = setTimeout(() => done(false), 2000); });
      s.on('data', (d) => done(d.toString().startsWith('SSH-')));
      s.on('error', () => done(false));
    });
    if (got) return Date.now() - started;
    if (Date.now() - started > timeoutMs) throw new Error(`no banner on ${PUBLIC}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Host memory after dropping clean caches, in bytes: what the kernel counts as not available
 * (MemTotal - MemAvailable; clean page cache, mapped or not, counts as available) and what is
 * not free at all (MemTotal - MemFree: that cache included). */

/** What the machine's CPUs did over a window: busy share of all of them, and of one core the
 * agent's and PID 1's (on these machines a process monitor whose work grows with the number of
 * tasks), with the tasks running then. */
interface IdleCpu { busy: number; agent: number | null; pid1: number; tasks: number }

function cpuTicks(): { total: number; idle: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { total: f.reduce((a, b) => a + b, 0), idle: f[3]! + f[4]! };
}

function procTicks(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return NaN;
  }
}

async function idleCpu(ms: number, agentPid: number | null): Promise<IdleCpu> {
  const c0 = cpuTicks();
  const a0 = agentPid ? procTicks(agentPid) : NaN;
  const p0 = procTicks(1);
  await new Promise((r) => setTimeout(r, ms));
  const c1 = cpuTicks();
  const hz = 100;
  const oneCore = (d: number) => d / hz / (ms / 1000);
  return {
    busy: 1 - (c1.idle - c0.idle) / (c1.total - c0.total),
    agent: agentPid ? oneCore(procTicks(agentPid) - a0) : null,
    pid1: oneCore(procTicks(1) - p0),
    tasks: readdirSync('/proc').filter((n) => /^\d+$/.test(n)).reduce((sum, pid) => sum + (() => { try { return readdirSync(`/proc/${pid}/task`).length; } catch { return 0; } })(), 0),
  };
}

function describeIdle(i: IdleCpu): string {
  const pct = (x: number | null) => (x === null || Number.isNaN(x) ? '–' : `${Math.round(x * 100)} %`);
  return `${pct(i.busy)} busy; agent ${pct(i.agent)}; PID 1 ${pct(i.pid1)}; ${i.tasks} tasks`;
}

function hostMemory(): { inUse: number; notFree: number } {
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
  const info = readFileSync('/proc/meminfo', 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(info)?.[1] ?? NaN);
  return { inUse: (kb('MemTotal') - kb('MemAvailable')) * 1024, notFree: (kb('MemTotal') - kb('MemFree')) * 1024 };
}

/** A sliver's memory.stat from its payload cgroup (cgroup v1 memory hierarchy). */
function memoryStat(id: string): Map<string, number> {
  const text = readFileSync(`/sys/fs/cgroup/memory/lxc.payload.sl-${id}/memory.stat`, 'utf8');
  return new Map(text.trim().split('\n').map((l) => { const [k, v] = l.split(' '); return [k!, Number(v)]; }));
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
  return { median: q(0.5), p95: q(0.95), min: s[0]!, max: s.at(-1)! };
};

/** What the node shows of a sliver that sends no banner: its DNAT entry, link, container and sshd. */
function diagnose(id: string, port: number, address: string | null): string {
  const sh = (cmd: string) => {
    try {
      return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      return `(failed: ${(e.stderr || e.message).trim().slice(0, 300)}) ${e.stdout ?? ''}`.trim();
    }
  };
  const ip = address?.split('/')[0] ?? '';
  return [
    `nft entries for port ${port}: ${sh(`ip netns exec ${NODE} nft list ruleset | grep -n -w ${port} | head -5`)}`,
    `nft entries for ${ip}: ${sh(`ip netns exec ${NODE} nft list ruleset | grep -n -F '${ip} ' | head -5`)}`,
    `route to ${ip}: ${sh(`ip -n ${NODE} route get ${ip}`)}`,
    `link: ${sh(`ip -n ${NODE} -br addr | grep -F '${ip.split('.').slice(0, 3).join('.')}.' | head -3`)}`,
    `container: ${sh(`lxc-info -P ${join(dirOf.state, 'lxc')} -n sl-${id} -s -p`)}`,
    `listening in it: ${sh(`nsenter -t $(lxc-info -P ${join(dirOf.state, 'lxc')} -n sl-${id} -p -H) -n ss -ltn`)}`,
    `connect from the node namespace: ${sh(`ip netns exec ${NODE} timeout 3 bash -c 'exec 3<>/dev/tcp/${ip}/22 && head -c 40 <&3'`)}`,
  ].join('\n');
}
const dirOf = { state: '' };

interface Replica { url: string; ca: string | null }

/**
 * The registry's two replicas, HTTPS and plain HTTP. pglite (the default): embedded, in this
 * process, so its work shares this process's thread with the benchmark's own. postgres: two
 * `planetlite-registry serve` processes on a real PostgreSQL and Redis, as a site deploys it.
 */
async function startReplicas(dir: string): Promise<{ registry: Replica; plain: Replica; close(): Promise<void> }> {
  const admin = { email: 'bench@x.test', password: 'bench-password' };
  if (REGISTRY === 'pglite') {
    const db = await openDatabase({});
    const base = { listen: '127.0.0.1:0', adminEmail: admin.email, adminPassword: admin.password, sweeps: false, db, fanout: memoryFanout() };
    const registry = await startRegistry(base);
    const plain = await startRegistry({ ...base, plainHttp: true });
    return { registry, plain, close: async () => { await registry.close(); await plain.close(); await db.close(); } };
  }
  const pg = await startPostgres();
  const redis = await startRedis();
  const env = { DATABASE_URL: await pg.createDatabase('bench'), REDIS_URL: redis.url, PLANETLITE_ADMIN_EMAIL: admin.email, PLANETLITE_ADMIN_PASSWORD: admin.password };
  const registry = await startRegistryProcess(env, { tlsDataDir: join(dir, 'registry'), timeoutMs: 60_000 });
  const plain = await startRegistryProcess(env).catch(async (err: unknown) => { await registry.stop(); throw err; });
  return { registry, plain, close: async () => { await registry.stop(); await plain.stop(); await redis.stop(); await pg.stop(); } };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pl-bench-'));
  chmodSync(dir, 0o711);
  const stateDir = join(dir, 'agent');
  dirOf.state = stateDir;
  let agent: ChildProcess | null = null;
  // Two replicas of one registry (one database, one fan-out): HTTPS, and plain HTTP on loopback.
  const { registry, plain, close: closeRegistry } = await startReplicas(dir);
  trustRegistry(registry.url, registry.ca!);
  try {
    // The node, joined to this machine (198.18.251.2) so the bench connects to its ports directly.
    await makeNodeNamespace({ ns: NODE, peerNs: null, octet: 251, link: 'pl-bench-' });

    const admin = new PlanetLiteClient({ registry: registry.url });
    await admin.login('bench@x.test', 'bench-password');
    await admin.createSite({ login_base: 'bench', name: 'Bench', max_slices: 10_000, max_slivers: 10_000 });
    const key = join(dir, 'key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    await admin.addKey((await admin.me()).id, readFileSync(`${key}.pub`, 'utf8'));
    const token = (await admin.createEnrollmentToken('bench')).token;
    // 2,500 slivers of 10 ports (the default window holds 1,000); clear of the floor's and the
    // bare chain's ports (39000, 40000 on).
    const e = await enroll({ registry: registry.url, token, caPin: caPinOf(registry.ca!), address: PUBLIC, hostname: 'bench.node', stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null }, portWindow: { first: 10_000, last: 34_999 } });
    const settings = { pool: join(dir, 'pool.img'), pool_size: '16G', sliver_subnet: '10.230.0.0/16', netns: NODE, sliver_roots: ROOTS };
    const image = join(dir, IMAGE === 'tiny' ? 'tiny.tar' : 'debian12.tar.zst');
    execFileSync('bash', [join(ROOT, `infra/images/${IMAGE}/build.sh`), image], { stdio: ['ignore', 'ignore', 'inherit'] });
    const img = await importImage({ stateDir, name: IMAGE, file: image, settings });

    // 0. The floor: the same host operations scripted by hand (scripts/bench/floor.sh), no
    // PlanetLite code, in the same pool and namespace.
    const drivers = await openDrivers(loadSettings(stateDir, settings), PUBLIC, stateDir);
    const poolDir = loadSettings(stateDir, settings).pool_mount;
    const imageSubvol = join(poolDir, 'images', img.sha256);
    const floorSh = (...a: string[]) => execFileSync('bash', [join(ROOT, 'scripts/bench/floor.sh'), ...a], { stdio: ['ignore', 'ignore', 'inherit'] });
    const floorLxc = join(dir, 'floor-lxc');
    const floor: number[] = [];
    floorSh('init', NODE);
    try {
      for (let i = 0; i < Math.min(N, 20); i++) {
        const port = 39000 + i;
        const t0 = Date.now();
        floorSh('up', NODE, imageSubvol, poolDir, floorLxc, String(i), PUBLIC, String(port));
        floor.push(await banner(port, t0));
        floorSh('down', NODE, poolDir, floorLxc, String(i));
      }
    } finally {
      for (let i = 0; i < Math.min(N, 20); i++) floorSh('down', NODE, poolDir, floorLxc, String(i));
      floorSh('fini', NODE);
    }

    // 1. The bare chain, through the drivers directly, in the same pool and namespace.
    const bare: number[] = [];
    for (let i = 0; i < Math.min(N, 20); i++) {
      const id = randomUUID();
      const spec = { id, slot: 4000 + i, ports: { first: 40000 + i * 10, last: 40009 + i * 10 }, kind: 'veth' as const };
      const t0 = Date.now();
      const rootfs = await drivers.storage.createRoot(id, img.sha256, 256 << 20);
      const net = await drivers.network.attach(spec);
      await drivers.network.apply([spec]);
      await drivers.instances.lxc!.define({ id, hostname: 'bare', rootfs, memoryMb: 256, cpuShares: 1024, idmapBase: 2_000_000_000 - 65536 * (i + 1), net: { link: net.peerIf!, address: `${net.sliverAddress}/${net.prefix}`, gateway: net.gateway } });
      await drivers.instances.lxc!.start(id);
      bare.push(await banner(spec.ports.first, t0));
      await drivers.instances.lxc!.destroy(id);
      await drivers.network.detach(id);
      await drivers.storage.deleteRoot(id);
    }
    await drivers.network.apply([]);

    // 2. Through the registry and the agent, in blocks that alternate between the HTTPS and the
    // plain-HTTP replica; the agent follows the replica of its block (restarted on its node.json).
    const memBefore = hostMemory();
    const nodeJson = join(stateDir, 'node.json');
    const caFile = join(stateDir, 'registry-ca.pem');
    const startAgent = async (via: Replica, flags: string[] = []) => {
      if (agent && agent.exitCode === null) {
        const exited = new Promise((r) => agent!.once('exit', r));
        agent.kill('SIGTERM');
        await exited;
      }
      writeFileSync(nodeJson, JSON.stringify({ ...JSON.parse(readFileSync(nodeJson, 'utf8')), registry: via.url }));
      if (via.ca) writeFileSync(caFile, via.ca);
      else rmSync(caFile, { force: true });
      // The agent runs as its own process, as on a node (`planetlite-agent run`, settings from the state dir).
      // At info at least: its 'desired state received' and 'sliver built' lines split each timed
      // sliver's start-up (agentLog); lines below the asked level are not shown.
      const shown = LEVELS[process.env.PLANETLITE_BENCH_AGENT_LOG ?? process.env.PLANETLITE_BENCH_LOG ?? 'warn'] ?? 40;
      // PLANETLITE_BENCH_HEAP=DIR: the agent writes a heap snapshot there on SIGUSR2 (sent after the idle minute).
      const heapFlags = process.env.PLANETLITE_BENCH_HEAP ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${resolve(process.env.PLANETLITE_BENCH_HEAP)}`] : [];
      agent = spawn(process.execPath, [...heapFlags, join(ROOT, 'apps/agent/bin/planetlite-agent.js'), 'run', '--state-dir', stateDir, ...flags, '--log-level', shown < 30 ? (process.env.PLANETLITE_BENCH_AGENT_LOG ?? process.env.PLANETLITE_BENCH_LOG)! : 'info'], { stdio: ['ignore', 'pipe', 'inherit'] });
      createInterface({ input: agent.stdout! }).on('line', (line) => {
        const level = agentLog.read(line);
        if (level === null || level >= shown) process.stdout.write(line + '\n');
      });
      const agentExit = new Promise((r) => agent!.once('exit', r));
      const since = Date.now();
      await Promise.race([
        (async () => { for (;;) { if (await admin.getNode(e.node_id).then((n) => n.state === 'online' && Date.parse(n.last_seen ?? '') >= since, () => false)) return; await new Promise((r) => setTimeout(r, 100)); } })(),
        agentExit.then(() => { throw new Error('the agent exited'); }),
      ]);
    };
    const timed: Record<'https' | 'http', number[]> = { https: [], http: [] };
    // The first sliver after each (re)start of the agent, apart: it shares the node with the
    // agent's start-up work (the VM driver's probe boots a guest under TCG, the whole table is
    // written), which a node pays once per agent start, not per sliver.
    const afterStart: number[] = [];
    const slivers: string[] = [];
    const splits = new Map<string, Split>();
    const timedIds: string[] = [];
    const BLOCKS = 4;
    const create = async (name: string, client: PlanetLiteClient) => {
      await client.createSlice({ name, description: 'bench', url: 'u', image: IMAGE, resources: { memory_mb: 64, disk_mb: 64 } });
      const t0 = Date.now();
      const s = await client.createSliver(name, e.node_id);
      const posted = Date.now();
      const ms = await banner(s.ports.first, t0).catch(async (err: unknown) => {
        const now = await client.getSliver(s.id).catch(() => null);
        console.error(`bench: no banner from sliver ${s.id} (port ${s.ports.first}, address ${now?.address ?? '?'}):\n${diagnose(s.id, s.ports.first, now?.address ?? null)}`);
        throw new Error(`${(err as Error).message}; sliver ${s.id} is ${now?.state ?? '?'}${now?.error ? ` (${now.error})` : ''}`, { cause: err });
      });
      log.debug({ sliver: s.id, name, t0, posted, banner: t0 + ms }, 'bench sliver');
      const split = agentLog.split(s.id, t0, posted, t0 + ms);
      if (split) splits.set(s.id, split);
      slivers.push(s.id);
      return ms;
    };
    for (let i = 0; i < 2 * N; i++) {
      const block = Math.floor((i * BLOCKS) / (2 * N));
      const mode = block % 2 === 0 ? 'https' : 'http';
      const via = mode === 'https' ? registry : plain;
      const client = new PlanetLiteClient({ registry: via.url, token: admin.token });
      if (i === 0 || Math.floor(((i - 1) * BLOCKS) / (2 * N)) !== block) {
        await startAgent(via);
        afterStart.push(await create(`bench_first${block}`, client));
      }
      timed[mode].push(await create(`bench_s${i}`, client));
      if (mode === 'https') timedIds.push(slivers.at(-1)!);
      if (process.env.PLANETLITE_BENCH_EACH) console.error(`bench: sliver ${i} (${mode}, block ${block}) ${timed[mode].at(-1)} ms`);
    }
    const full = timed.https;

    // 2b. With a warm pool: each sliver handed out from a full pool (the agent refills it between).
    const pooled: number[] = [];
    if (POOL > 0) {
      await startAgent(registry, ['--warm-pool-image', IMAGE, '--warm-pool-size', String(POOL)]);
      const sparesUp = async () => {
        const spares = readLedger(stateDir).filter((r) => r.spare).length;
        const running = [...(await drivers.instances.lxc!.states()).values()].filter((st) => st === 'running').length;
        return spares === POOL && running === slivers.length + POOL;
      };
      const fullPool = async () => {
        for (const t0 = Date.now(); !(await sparesUp()); await new Promise((r) => setTimeout(r, 100))) {
          if (Date.now() - t0 > 300_000) throw new Error('the warm pool did not fill within 300 s');
        }
        // The agent's next report tells the registry (every 30 s, or at once after a fill).
        await new Promise((r) => setTimeout(r, 1500));
      };
      for (let i = 0; i < N; i++) {
        await fullPool();
        pooled.push(await create(`bench_pool${i}`, admin));
      }
    }

    // 3. Density: the rest in bursts of --step through the API, each burst waited out; after
    // each, start-up again at that node size (3 slivers made one at a time, so the node ends with
    // 3 more than --density), for the plot.
    const burst = Date.now();
    const step = Math.max(1, Number(args.step ?? Math.ceil((M - slivers.length) / 8)));
    const growth: Array<{ size: number; ms: number[]; floor: number[]; idle?: IdleCpu; parts?: Split[] }> = [{ size: 1, ms: full.slice(0, 3), floor: floor.slice(0, 3), parts: timedIds.slice(0, 3).map((id) => splits.get(id)).filter((x) => x !== undefined) }];
    const pace: number[] = [];
    while (slivers.length < M) {
      const ports: number[] = [];
      const t0 = Date.now();
      for (let n = Math.min(step, M - slivers.length); n > 0; n--) {
        const name = `bench_d${slivers.length}`;
        await admin.createSlice({ name, description: 'bench', url: 'u', image: IMAGE, resources: { memory_mb: 64, disk_mb: 64 } });
        const s = await admin.createSliver(name, e.node_id);
        slivers.push(s.id);
        ports.push(s.ports.first);
      }
      for (const port of ports) await banner(port, Date.now(), 3_600_000, 200);
      pace.push((Date.now() - t0) / ports.length / 1000);
      // The node settles (the burst's last reports and accounting) before start-up is timed; what
      // the machine's CPUs do meanwhile is the background every figure at this size runs on.
      const idle = await idleCpu(10_000, (agent as ChildProcess | null)?.pid ?? null);
      const size = slivers.length;
      // The floor at this node size too: what the kernel and the tools cost with N slivers there.
      const floorHere: number[] = [];
      floorSh('init', NODE);
      try {
        for (let k = 0; k < 3; k++) {
          const t0 = Date.now();
          floorSh('up', NODE, imageSubvol, poolDir, floorLxc, String(k), PUBLIC, String(39000 + k));
          floorHere.push(await banner(39000 + k, t0));
          floorSh('down', NODE, poolDir, floorLxc, String(k));
        }
      } finally {
        for (let k = 0; k < 3; k++) floorSh('down', NODE, poolDir, floorLxc, String(k));
        floorSh('fini', NODE);
      }
      // --profile DIR: the agent's and this process's (the registry's) CPU while the 3 are made.
      const profiling = args.profile ? [await profileProcess(agent!.pid!), await profileSelf()] : null;
      const ms: number[] = [];
      for (let k = 0; k < 3; k++) ms.push(await create(`bench_g${size}_${k}`, admin));
      const parts = slivers.slice(-3).map((id) => splits.get(id)).filter((x) => x !== undefined);
      if (profiling) {
        console.error(saveProfile(join(resolve(args.profile!), `agent-${size}.cpuprofile`), await profiling[0]!.stop()));
        console.error(saveProfile(join(resolve(args.profile!), `registry-${size}.cpuprofile`), await profiling[1]!.stop()));
      }
      if (ms.length) growth.push({ size, ms, floor: floorHere, idle, parts });
      console.error(`bench: ${slivers.length} slivers answer ssh (${Math.round((Date.now() - burst) / 1000)} s); start-up at ${size}: ${ms.join(', ')} ms (${parts.map(describeSplit).join('; ')}); floor ${floorHere.join(', ')} ms; settling: ${describeIdle(idle)}`);
    }
    const burstS = (Date.now() - burst) / 1000;
    const rssOf = (p: ChildProcess | null) => (p && p.exitCode === null ? Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024 : NaN);
    const agentRss = rssOf(agent);
    await new Promise((r) => setTimeout(r, 5000));
    const memAfter = hostMemory();
    // The agent once the node has been idle a minute (V8 gives back what the bursts left).
    await new Promise((r) => setTimeout(r, 60_000));
    const agentRssIdle = rssOf(agent);
    // What the idle RSS is made of: the agent's own memory (anonymous) and the pages of Node's
    // binary and libraries it maps (file, shared with every other Node process on the node).
    const agentNow = agent as ChildProcess | null; // (assigned in a closure: TypeScript narrows it to null)
    const agentParts = agentNow && agentNow.exitCode === null ? Object.fromEntries(['RssAnon', 'RssFile'].map((k) => [k, Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${agentNow.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024])) : {};
    console.error(`bench: the agent's RSS after a minute idle: ${(agentRssIdle / 2 ** 20).toFixed(0)} MB (anonymous ${agentParts.RssAnon?.toFixed(0)} MiB, file ${agentParts.RssFile?.toFixed(0)} MiB)`);
    if (process.env.PLANETLITE_BENCH_HEAP && agentNow) {
      agentNow.kill('SIGUSR2');
      await new Promise((r) => setTimeout(r, 15_000));
      console.error(`bench: heap snapshot asked of the agent in ${resolve(process.env.PLANETLITE_BENCH_HEAP)}`);
    }
    let rss = 0;
    let mapped = 0;
    let excl = 0;
    let procs = 0;
    for (const id of slivers) {
      const st = memoryStat(id);
      rss += st.get('total_rss') ?? 0;
      mapped += st.get('total_mapped_file') ?? 0;
      procs += Number(readFileSync(`/sys/fs/cgroup/pids/lxc.payload.sl-${id}/pids.current`, 'utf8'));
      excl += (await drivers.storage.usage(id))?.exclusiveBytes ?? 0;
    }
    const mib = (x: number) => (x / slivers.length / 2 ** 20).toFixed(2);
    const running = [...(await drivers.instances.lxc!.states()).values()].filter((st) => st === 'running').length;

    const fl = stats(floor);
    const b = stats(bare);
    const f = stats(full);
    const h = stats(timed.http);
    const a = stats(afterStart);
    const p = pooled.length ? stats(pooled) : null;
    const text = [
      `### Sliver start-up and density — ${new Date().toISOString().slice(0, 10)}`,
      '',
      `Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${IMAGE === 'tiny' ? 'tiny image (busybox + sshd)' : 'debian12 image (debootstrap minbase, OpenSSH, a shell init)'}, unprivileged LXC on a btrfs loop-file pool (${ROOTS === 'layered' ? 'layered roots: an overlay over the image, idmapped' : 'snapshot roots'}), nftables DNAT, all in one node namespace; ${REGISTRY === 'pglite' ? "registry on embedded PGlite in the benchmark's process" : 'registry: two planetlite-registry serve processes on PostgreSQL and Redis'}, the agent in its own process (planetlite-agent run --sliver-roots ${ROOTS}).`,
      '',
      '| path | slivers | median ms | p95 ms | min | max |',
      '|---|---:|---:|---:|---:|---:|',
      `| floor (scripts/bench/floor.sh: snapshot, veth, one DNAT rule, plain lxc-start, banner; no PlanetLite code) | ${floor.length} | ${fl.median} | ${fl.p95} | ${fl.min} | ${fl.max} |`,
      `| bare chain (drivers directly: snapshot, veth, DNAT, lxc-start, banner) | ${bare.length} | ${b.median} | ${b.p95} | ${b.min} | ${b.max} |`,
      `| POST /v1/slices/…/slivers → SSH banner on the forwarded port, HTTPS (default) | ${full.length} | ${f.median} | ${f.p95} | ${f.min} | ${f.max} |`,
      `| the same through the plain-HTTP replica (--plain-http, loopback) | ${timed.http.length} | ${h.median} | ${h.p95} | ${h.min} | ${h.max} |`,
      `| the first sliver after each start of the agent (not in the rows above) | ${afterStart.length} | ${a.median} | ${a.p95} | ${a.min} | ${a.max} |`,
      ...(p ? [`| POST → banner, HTTPS, handed out from a warm pool of ${POOL} (spares built and running ahead) | ${pooled.length} | ${p.median} | ${p.p95} | ${p.min} | ${p.max} |`] : []),
      '',
      ...(p ? [`Warm pool against the floor: ${(p.median / fl.median).toFixed(2)}× at the median (target < 1×), ${(p.p95 / fl.p95).toFixed(2)}× at p95.`, ''] : []),
      `POST → banner against the floor: ${(f.median / fl.median).toFixed(2)}× at the median (target ≤ 1.5×), ${(f.p95 / fl.p95).toFixed(2)}× at p95 (target ≤ 2×); the drivers driven directly: ${(b.median / fl.median).toFixed(2)}× at the median. Ratio of medians to the bare chain: ${(f.median / b.median).toFixed(2)}×. HTTPS against plain HTTP: ${(((f.median - h.median) / h.median) * 100).toFixed(1)} % at the median, ${(((f.p95 - h.p95) / h.p95) * 100).toFixed(1)} % at p95 (target ≤ 10 %), in ${BLOCKS} alternating blocks.`,
      '',
      `Density: ${running} idle slivers running on the node${M > 2 * N ? ` (${M - 2 * N} of them requested in bursts of ${step}; all answered ssh after ${burstS.toFixed(0)} s)` : ''}. Per sliver, after dropping clean caches, host memory not available (MemTotal − MemAvailable: container processes, LXC monitors, kernel objects such as cgroups, veths and nftables; clean page cache counts as available) grew by ${mib(memAfter.inUse - memBefore.inUse)} MiB, and memory not free (MemTotal − MemFree, that page cache included) by ${mib(memAfter.notFree - memBefore.notFree)} MiB. Inside the slivers' cgroups: ${mib(rss)} MiB anonymous + ${mib(mapped)} MiB mapped files each, ${(procs / slivers.length).toFixed(1)} processes each; ${(excl / slivers.length / 2 ** 10).toFixed(0)} KiB exclusive disk each. The agent's RSS: ${(agentRss / 2 ** 20).toFixed(0)} MB right after the last burst, ${(agentRssIdle / 2 ** 20).toFixed(0)} MB after a minute idle (anonymous ${agentParts.RssAnon?.toFixed(0)} MiB, Node's binary and libraries ${agentParts.RssFile?.toFixed(0)} MiB).${pace.length ? ` Burst pace: ${pace[0]!.toFixed(2)} s per sliver in the first burst, ${pace.at(-1)!.toFixed(2)} s in the last.` : ''}`,
      '',
      ...(growth.length > 1 ? ['| node size (slivers) | POST → banner, 3 made one at a time (ms) | median | the floor at this size (ms) | median | against the first floor | against this size\'s floor | the settled node\'s CPUs before (busy; the agent; PID 1; tasks) |', '|---:|---|---:|---|---:|---:|---:|---|', ...growth.map((g) => `| ${g.size} | ${g.ms.join(', ')} | ${stats(g.ms).median} | ${g.floor.join(', ')} | ${stats(g.floor).median} | ${(stats(g.ms).median / fl.median).toFixed(2)}× | ${(stats(g.ms).median / stats(g.floor).median).toFixed(2)}× | ${g.idle ? describeIdle(g.idle) : '–'} |`)] : []),
      ...(growth.some((g) => g.parts?.length) ? ['', "Where those start-ups went, from the agent's log (median of the 3, ms): to the agent (POST until the agent logs the document that holds the sliver), waiting in the agent (until its build starts: screen, plan, the queue), the build (root, link, table, limits, lxc-start), and after the build (until the banner: the container's init and sshd, the DNAT).", '', '| node size | to the agent | waiting in the agent | build | after the build |', '|---:|---:|---:|---:|---:|', ...growth.filter((g) => g.parts?.length).map((g) => `| ${g.size} | ${(['toAgent', 'waiting', 'build', 'after'] as const).map((k) => stats(g.parts!.map((x) => x[k])).median).join(' | ')} |`)] : []),
      '',
    ].join('\n');
    console.log(text);
    if (args.write) appendResults(args.write, text);
    if (args.svg && growth.length > 1) {
      writeFileSync(resolve(ROOT, args.svg), lineChart({
        title: `sliver start-up against node size (${ROOTS} roots, ${IMAGE} image)`,
        xLabel: 'slivers already on the node',
        yLabel: 'POST → ssh banner, ms',
        series: [
          { label: 'median of 3', color: '#1f77b4', points: growth.map((g) => [g.size, stats(g.ms).median]) },
          { label: 'max of 3', color: '#7f7f7f', points: growth.map((g) => [g.size, stats(g.ms).max]) },
          { label: 'floor at that size, median of 3', color: '#2ca02c', points: growth.map((g) => [g.size, stats(g.floor).median]) },
        ],
        lines: [{ label: 'target 1.5× floor', color: '#d62728', y: 1.5 * fl.median }],
      }));
    }
  } finally {
    // Teardown through the agent is not what is measured here: kill the slivers directly.
    if (agent && agent.exitCode === null) {
      const exited = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGTERM');
      await exited;
    }
    await removeNode({ stateDir, ns: NODE, poolFile: join(dir, 'pool.img') });
    await closeRegistry();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: 100 };

/** One sliver's start-up in four parts (ms): to the agent, waiting in it, its build, after it. */
interface Split { toAgent: number; waiting: number; build: number; after: number; api: number; steps: Record<string, number> }

const describeSplit = (x: Split) => `agent +${x.toAgent} (API ${x.api}), wait ${x.waiting}, build ${x.build} (${Object.entries(x.steps).map(([k, v]) => `${k} ${v}`).join(', ')}), after ${x.after}`;

/** What the agent's log says of each document received and each sliver built (times, epoch ms). */
const agentLog = new (class {
  readonly received: number[] = [];
  readonly built = new Map<string, { end: number; ms: number; steps: Record<string, number> }>();

  /** Takes one line of the agent's output; its level, or null when it is not a log line. */
  read(line: string): number | null {
    let o: { level?: number; time?: number; msg?: string; sliver?: string; ms?: number; steps?: Record<string, number> };
    try {
      o = JSON.parse(line) as typeof o;
    } catch {
      return null;
    }
    if (o.msg === 'desired state received' && typeof o.time === 'number') {
      this.received.push(o.time);
      if (this.received.length > 10_000) this.received.splice(0, 5_000);
    }
    if (o.msg === 'sliver built' && o.sliver && typeof o.time === 'number' && typeof o.ms === 'number') this.built.set(o.sliver, { end: o.time, ms: o.ms, steps: o.steps ?? {} });
    return typeof o.level === 'number' ? o.level : null;
  }

  /** The parts of a sliver posted at t0 (the API answered at posted) that answered at banner; null when the log lacks them. */
  split(id: string, t0: number, posted: number, banner: number): Split | null {
    const b = this.built.get(id);
    // The document that holds it: the first one received after the POST (one sliver is made at a time).
    const start = b ? b.end - b.ms : NaN;
    const got = this.received.find((t) => t >= t0 && t <= start);
    if (!b || got === undefined) return null;
    return { toAgent: got - t0, waiting: start - got, build: b.ms, after: banner - b.end, api: posted - t0, steps: b.steps };
  }
})();
