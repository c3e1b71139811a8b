// The fleet benchmark: two `planetlite-registry serve` replicas (HTTPS, one CA) on one real
// PostgreSQL and one Redis, and N simulated agents that enroll with real tokens, hold the
// desired-state long-poll with ETags and report observed state every 30 s (spread out) with K
// slivers each, half on each replica, in worker processes. Measures change → node latency
// (a sliver acted on or created through replica A until the owning agent's long-poll on replica B
// brings the new document), reports/s, each replica's CPU and RSS, PostgreSQL connections and
// statement time (pg_stat_statements: which statements took its time), and a SIGKILL of replica B mid-run (its agents move to A; no change lost).
//
//   node scripts/bench/fleet.ts --nodes 1000,5000 [--slivers-per-node 20] [--seconds 60]
//        [--changes-per-second 5] [--processes P] [--write docs/benchmarks.md] [--svg docs/bench/fleet.svg]
//
// Needs `bash scripts/setup.sh` (the build). The K seed slivers per node are written straight
// into PostgreSQL (200,000 API calls would take longer than the run); every measured change goes
// through the API.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
import { PlanetLiteClient, trustRegistry, type DesiredState } from '@planetlite/api';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../../test/harness/services.ts';
import { startRegistryProcess, type RegistryProcess } from '../../test/harness/registry-process.ts';
import { ChangeTracker, Fleet, inBatches, percentile, type SimAgent } from './fleet-agents.ts';
import { AGENTS_PER_PROCESS, ForkedFleet, workersFor } from './fleet-workers.ts';
import { appendResults, lineChart } from './results.ts';
import { mostRunning, sampleActive, sampleWaits } from './pg-waits.ts';
import { gcBetween, queuesPool, readGc, readQueues, readRoutes, sampleQueues, type QueueFigures } from './replica-queues.ts';
import { profileProcess, profileSelf, saveProfile } from './profile.ts';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    'slivers-per-node': { type: 'string', default: '20' },
    seconds: { type: 'string', default: '60' },
    'changes-per-second': { type: 'string', default: '5' },
    'report-seconds': { type: 'string', default: '30' },
    'moving-usage': { type: 'boolean', default: false },
    settle: { type: 'string', default: '10' },
    ramp: { type: 'string', default: '0' },
    'storm-seconds': { type: 'string', default: '300' },
    processes: { type: 'string' },
    'agents-nice': { type: 'string', default: '0' },
    write: { type: 'string' },
    svg: { type: 'string' },
    profile: { type: 'string' },
    'replica-node-options': { type: 'string' },
    'pg-setting': { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log('usage: node scripts/bench/fleet.ts --nodes 1000,5000 [--slivers-per-node 20] [--seconds 60] [--changes-per-second 5] [--report-seconds 30] [--settle 10] [--ramp 0] [--storm-seconds 300] [--moving-usage] [--processes P] [--agents-nice N] [--write FILE.md] [--svg FILE.svg] [--profile DIR] [--replica-node-options FLAGS] [--pg-setting NAME=VALUE ...]\n\nThe simulated agents run in worker processes of up to 2,500 agents (--processes sets how many, at most 8,000 agents each; 0: in this process, which also times the changes and so adds its own event-loop stops to every latency). --agents-nice N: the worker processes run at nice N (0–19): the simulated agents stand for other machines, and at 0 they take this machine\'s cores from the registry as much as PostgreSQL and the replicas do; a late agent only makes a latency longer, since each stamps when its document came. --settle: seconds between the last agent\'s first document and the measured window. --ramp S: the agents start over S seconds, each at a random instant (0: all at once, a reconnect storm). --storm-seconds S: how long every agent may take to get its first document before the run is given up (it is timed either way). --moving-usage: each report carries new figures (cpu seconds, bytes), as a real agent\'s do; without it, the same figures every time. --profile DIR: CPU profiles of replica A, replica B and the agents\' process over the window (DIR/N-A.cpuprofile, …), with a summary of each. --replica-node-options: NODE_OPTIONS for both replicas (V8 flags to compare, e.g. --max-semi-space-size=32). --pg-setting: a PostgreSQL server setting for the run (repeatable; e.g. autovacuum=off, to see what autovacuum costs).');
  process.exit(0);
}
const NODES = args.nodes!.split(',').map(Number);
const K = Number(args['slivers-per-node']);
const SECONDS = Number(args.seconds);
const RATE = Number(args['changes-per-second']);
const REPORT_SECONDS = Number(args['report-seconds']);
const MOVING_USAGE = args['moving-usage'] === true;
const SETTLE = Number(args.settle);
const STORM_SECONDS = Number(args['storm-seconds']);
const RAMP = Number(args.ramp);
if (!(RAMP >= 0)) { console.error('fleet: --ramp must be a number of seconds, 0 or more'); process.exit(2); }
for (const [name, v] of [['--nodes', Math.min(...NODES)], ['--slivers-per-node', K], ['--seconds', SECONDS], ['--changes-per-second', RATE], ] as const) {
  if (!Number.isInteger(v) || v < 1) { console.error(`fleet: ${name} must be a positive integer`); process.exit(2); }
}
const PROCESSES = args.processes === undefined ? null : Number(args.processes);
const AGENTS_NICE = Number(args['agents-nice']);
if (!(Number.isInteger(AGENTS_NICE) && AGENTS_NICE >= 0 && AGENTS_NICE <= 19)) { console.error('fleet: --agents-nice must be an integer from 0 to 19'); process.exit(2); }
if (PROCESSES !== null && !(Number.isInteger(PROCESSES) && PROCESSES >= 0)) { console.error('fleet: --processes must be 0 (the agents in this process) or more'); process.exit(2); }
// Seed slivers get 100 ports each up to 90 a node (the default window, 20000-29999, keeps room
// for the new slivers of the run); a bigger node gets 10 each, in a window widened to hold them.
const SEED_PORTS = K <= 90 ? 100 : 10;
const PORT_WINDOW = K <= 90 ? undefined : { first: 20000, last: 20000 + K * SEED_PORTS + 10_000 - 1 };
if (PORT_WINDOW && PORT_WINDOW.last > 65535) { console.error('fleet: --slivers-per-node is at most 3,500 (10 ports each, and room for the new slivers)'); process.exit(2); }
const ROOT = new URL('../../', import.meta.url).pathname;
const ADMIN = { email: 'fleet@planetlite.test', password: 'fleet-password' };
const SITE = 'fleet';
const log = (m: string) => console.error(`[fleet ${new Date().toISOString().slice(11, 19)}] ${m}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Replicas still running when this process ends (an error, ^C) are killed with it.
const live = new Set<RegistryProcess>();
const tempDirs = new Set<string>();
process.on('exit', () => {
  for (const r of live) r.proc.kill('SIGKILL');
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

interface ProcSample { cpuTicks: number; rssKb: number; at: number }
function sampleProc(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const rss = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { cpuTicks: Number(f[11]) + Number(f[12]), rssKb: Number(rss), at: performance.now() };
}
const cpuShare = (a: ProcSample, b: ProcSample) => ((b.cpuTicks - a.cpuTicks) / 100) / ((b.at - a.at) / 1000);

interface Result {
  nodes: number;
  load: string;
  changes: number;
  p50: number; p99: number; max: number;
  reportsPerSec: number; reportP50: number; reportP99: number; reportErrors: number;
  replicas: { name: string; cpu: number; rssMb: number }[];
  pgConnections: number;
  dbMsPerStatementTx: number; txPerSec: number;
  changeErrors: number;
  agentsCpu: number; loopDelayP99Ms: number;
  lateAfterWindow: number;
  /** pg_stat_activity of the database sampled every 250 ms in the window: mean backends per wait. */
  waits: string;
  /** Replica A's queues in the window (its /metrics). */
  queuesA: QueueFigures;
  /** pg_stat_statements over the window: the statements that took most of PostgreSQL's time. */
  statements: string[];
  kill: { notMoved: number; agentsMoved: number; convergeMs: number; changes: number; p99: number; max: number; lost: number; stale: number; unchecked: number } | { error: string };
}

/** A process's open files against its limit: each agent holds two connections on its replica. */
function openFiles(pid: number): string {
  try {
    const open = execFileSync('ls', [`/proc/${pid}/fd`], { encoding: 'utf8' }).split('\n').filter(Boolean).length;
    const limit = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1];
    return `replica A holds ${open} open files of its limit ${limit ?? '?'}`;
  } catch {
    return 'replica A has exited';
  }
}

async function runOne(pgServer: PostgresServer, redis: RedisServer, n: number): Promise<Result> {
  const dbUrl = await pgServer.createDatabase('fleet');
  const tlsDir = mkdtempSync(join(tmpdir(), 'pl-fleet-tls-'));
  tempDirs.add(tlsDir);
  const env = { DATABASE_URL: dbUrl, REDIS_URL: redis.url, PLANETLITE_ADMIN_EMAIL: ADMIN.email, PLANETLITE_ADMIN_PASSWORD: ADMIN.password };
  const replicas: RegistryProcess[] = [];
  const db = new pg.Client({ connectionString: dbUrl });
  let fleet: Fleet | ForkedFleet | undefined;
  try {
    for (let i = 0; i < 2; i++) {
      // --profile: each replica's inspector (opened by SIGUSR1) on a port of its own.
      const nodeOptions = [args.profile ? `--inspect-port=127.0.0.1:${9301 + i}` : '', args['replica-node-options'] ?? ''].filter(Boolean).join(' ');
      replicas.push(await startRegistryProcess({ ...env, ...(nodeOptions ? { NODE_OPTIONS: nodeOptions } : {}) }, { tlsDataDir: tlsDir, timeoutMs: 60_000 }));
      live.add(replicas[i]!);
    }
    const [A, B] = replicas as [RegistryProcess, RegistryProcess];
    for (const r of replicas) trustRegistry(r.url, r.ca!);
    await db.connect();
    await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
    const admin = new PlanetLiteClient({ registry: A.url });
    await admin.login(ADMIN.email, ADMIN.password);
    await admin.createSite({ login_base: SITE, name: 'Fleet', max_slices: 100_000, max_slivers: 100_000 });
    // The API caps a site at 100,000 slivers; N × K seed slivers may be more.
    await db.query('UPDATE sites SET max_slivers = $2 WHERE login_base = $1', [SITE, 10_000_000]);
    for (let k = 0; k < K; k++) await admin.createSlice({ name: `${SITE}_seed${k}`, description: 'fleet seed', url: 'https://example.org' });
    const CHANGE_SLICES = 20;
    for (let c = 0; c < CHANGE_SLICES; c++) await admin.createSlice({ name: `${SITE}_chg${c}`, description: 'fleet change', url: 'https://example.org' });

    // Enrollment: a real single-use token per node, through the replica the agent will poll.
    let t = performance.now();
    const enrolled = await inBatches(Array.from({ length: n }, (_, i) => i), 16, async (i) => {
      const tok = await admin.createEnrollmentToken(SITE);
      const r = await new PlanetLiteClient({ registry: replicas[i % 2]!.url }).enroll({
        token: tok.token, hostname: `node${i}.fleet.test`, address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
        capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 64, memory_mb: 1 << 20, disk_mb: 1 << 30 },
        ...(PORT_WINDOW ? { port_window: PORT_WINDOW } : {}),
      });
      return { ...r, replica: i % 2 };
    });
    log(`N=${n}: enrolled in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    t = performance.now();
    await db.query(
      `INSERT INTO slivers (id, slice, site, node_id, kind, port_first, port_last)
       SELECT gen_random_uuid(), $1 || '_seed' || k, $1, n.id, 'lxc', n.port_first + k * $3::int, n.port_first + k * $3::int + $3::int - 1
       FROM nodes n CROSS JOIN generate_series(0, $2 - 1) k WHERE n.site = $1`,
      [SITE, K, SEED_PORTS],
    );
    log(`N=${n}: ${n * K} seed slivers in ${((performance.now() - t) / 1000).toFixed(1)} s`);

    const tracker = new ChangeTracker();
    // The agents in worker processes, so that this one, which times the changes, only does that.
    const fleetOpts = { waitSeconds: 25, reportSeconds: REPORT_SECONDS, movingUsage: MOVING_USAGE, rampSeconds: RAMP, onDocument: (a: SimAgent, doc: DesiredState, at: number) => tracker.seen(a, doc, at) };
    const fleetReplicas = replicas.map((r) => ({ url: r.url, ca: r.ca }));
    const processes = PROCESSES ?? workersFor(n);
    if (processes > 0 && n / processes > AGENTS_PER_PROCESS) throw new Error(`--processes ${processes}: more than ${AGENTS_PER_PROCESS} agents in a process (open files); give more`);
    fleet = processes === 0 ? new Fleet(fleetReplicas, 32, fleetOpts) : new ForkedFleet(fleetReplicas, processes, fleetOpts, AGENTS_NICE);
    for (const e of enrolled) fleet.add(e.node_id, e.node_key, e.replica);
    t = performance.now();
    fleet.start();
    // Every 15 s: how far the agents are, what failed, and where each replica's requests wait.
    const queuePools = replicas.map((r) => queuesPool(r.url, r.ca));
    let shown = t;
    try {
      while (fleet.agents.some((a) => !a.doc)) {
        const got = fleet.agents.filter((a) => a.doc).length;
        if (performance.now() - t > STORM_SECONDS * 1000) throw new Error(`agents did not all get their first document within ${STORM_SECONDS} s (${got} of ${n} did; failed requests: ${JSON.stringify(fleet.stats.errors)})`);
        if (performance.now() - shown > 15_000) {
          shown = performance.now();
          const qs = await Promise.all(queuePools.map(readQueues));
          log(`N=${n}: ${got} of ${n} hold their document after ${((shown - t) / 1000).toFixed(0)} s; reports ${fleet.stats.reports}, failed requests ${JSON.stringify(fleet.stats.errors)}; waiting for a connection / in the nodes' lane / for a report turn: ${qs.map((q, i) => `${'AB'[i]} ${q.poolWaiting}/${q.nodesWaiting}/${q.reportsWaiting}`).join(', ')}`);
        }
        await sleep(200);
      }
    } finally {
      await Promise.all(queuePools.map((p) => p.close()));
    }
    log(`N=${n}: every agent holds its document after ${((performance.now() - t) / 1000).toFixed(1)} s`);

    // Changes through A for agents on B: toggle a seed sliver (stop/start), every 5th a new sliver.
    const desired = new Map<string, string>();
    // How long the API took to answer each change, by kind: the rest of its latency is the way to the node.
    const apiMs = { action: [] as number[], sliver: [] as number[] };
    let chg = 0;
    const makeChange = async (a: SimAgent) => {
      const i = chg++;
      if (i % 5 === 4) {
        const slice = `${SITE}_chg${Math.floor(i / 5) % CHANGE_SLICES}`;
        if (a.doc?.slivers.some((s) => s.slice === slice)) return;
        const t0 = performance.now();
        tracker.expectSliver(a.nodeId, slice, t0);
        await admin.createSliver(slice, a.nodeId).catch((e: unknown) => { tracker.forget(a.nodeId, slice); throw e; });
        tracker.answered(a.nodeId, slice, performance.now());
        apiMs.sliver.push(performance.now() - t0);
      } else {
        const s = a.doc!.slivers[i % a.doc!.slivers.length]!;
        const want = (desired.get(s.id) ?? s.desired) === 'stopped' ? 'running' : 'stopped';
        desired.set(s.id, want);
        const t0 = performance.now();
        tracker.expectAction(a.nodeId, s.id, want, t0);
        await admin.sliverAction(s.id, want === 'stopped' ? 'stop' : 'start').catch((e: unknown) => { tracker.forget(a.nodeId, s.id); desired.delete(s.id); throw e; });
        tracker.answered(a.nodeId, s.id, performance.now());
        apiMs.action.push(performance.now() - t0);
      }
    };
    const busy = new Set<string>();
    const changeErrors: unknown[] = [];
    const driveChanges = async (ms: number, pick: () => SimAgent | undefined) => {
      const end = performance.now() + ms;
      const inflight: Promise<void>[] = [];
      while (performance.now() < end) {
        const a = pick();
        // One change at a time per node, until it arrived (see ChangeTracker.pendingOn).
        if (a && !busy.has(a.nodeId) && !tracker.pendingOn(a.nodeId)) {
          busy.add(a.nodeId);
          inflight.push(makeChange(a).catch((e: unknown) => { changeErrors.push(e); }).finally(() => busy.delete(a.nodeId)));
        }
        await sleep(1000 / RATE);
      }
      await Promise.all(inflight);
    };
    const onB = () => fleet!.agents.filter((a) => a.replica === 1);
    const randomOf = <T>(xs: T[]) => xs[Math.floor(Math.random() * xs.length)];

    // Let the report cadence fill up before measuring.
    await sleep(SETTLE * 1000);
    fleet.takeReportLatencies();
    const reports0 = fleet.stats.reports;
    const connects0 = fleet.stats.connects;
    const disconnects0 = { ...fleet.stats.disconnects };
    const p0 = replicas.map((r) => sampleProc(r.proc.pid!));
    const db0 = (await db.query('SELECT xact_commit + xact_rollback AS tx, active_time FROM pg_stat_database WHERE datname = current_database()')).rows[0];
    const bAgents = onB();
    // The agents' own process can be the bottleneck: its event-loop delay is part of every latency.
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const agentPids = [process.pid, ...(fleet instanceof ForkedFleet ? fleet.workers.map((w) => w.pid!) : [])];
    const self0 = agentPids.map(sampleProc);
    const sampler = sampleWaits(db);
    const active = sampleActive(db);
    const queues = sampleQueues(A.url, A.ca);
    const queuesOfB = sampleQueues(B.url, B.ca);
    const gcPools = [A, B].map((r) => queuesPool(r.url, r.ca));
    const gc0 = await Promise.all(gcPools.map(readGc));
    // The changes' own time inside replica A, beside what the benchmark's client saw.
    const CHANGE_ROUTES = ['POST /v1/slivers/:id/actions', 'POST /v1/slices/:name/slivers'];
    const routes0 = await readRoutes(gcPools[0]!, CHANGE_ROUTES);
    await db.query('SELECT pg_stat_statements_reset()');
    const profiling = args.profile ? [await profileProcess(A.proc.pid!, 9301), await profileProcess(B.proc.pid!, 9302), await profileSelf()] : null;
    await driveChanges(SECONDS * 1000, () => randomOf(bAgents));
    if (profiling) {
      for (const [i, name] of ['A', 'B', 'agents'].entries()) console.error(saveProfile(join(resolve(args.profile!), `${n}-${name}.cpuprofile`), await profiling[i]!.stop()));
    }
    const waits = await sampler.stop();
    const running = await active.stop();
    const queuesA = await queues.stop();
    const queuesB = await queuesOfB.stop();
    const gc1 = await Promise.all(gcPools.map(readGc));
    const routes1 = await readRoutes(gcPools[0]!, CHANGE_ROUTES);
    log(`N=${n}: the changes inside replica A (its own request timer), and the benchmark's own event loop: ${CHANGE_ROUTES.map((r) => `${r}: ${routes1[r]!.count - routes0[r]!.count} answered, over 0.5 s ${routes1[r]!.over500ms - routes0[r]!.over500ms}, over 1 s ${routes1[r]!.over1s - routes0[r]!.over1s}`).join('; ')}; this process's event loop: p99 ${(loopDelay.percentile(99) / 1e6).toFixed(0)}, longest ${(loopDelay.max / 1e6).toFixed(0)} ms`);
    await Promise.all(gcPools.map((p) => p.close()));
    for (const [i, name] of ['A', 'B'].entries()) {
      const gc = gcBetween(gc0[i]!, gc1[i]!);
      log(`N=${n}: replica ${name}'s garbage collections in the window: ${Object.entries(gc).filter(([, g]) => g.count > 0).map(([kind, g]) => `${kind} ${g.count} (${g.seconds.toFixed(2)} s; over 0.1 s: ${g.over100ms}, over 1 s: ${g.over1s})`).join('; ') || 'none'}`);
    }
    for (const [name, q] of [['A', queuesA], ['B', queuesB]] as const) {
      log(`N=${n}: replica ${name} in the window: ${q.poolBusy.toFixed(1)} connections busy (mean); queries waiting for one: mean ${q.poolWaiting.mean.toFixed(1)}, most ${q.poolWaiting.max}; nodes' queries waiting for their lane: mean ${q.nodesWaiting.mean.toFixed(1)}, most ${q.nodesWaiting.max}; reports waiting their turn: mean ${q.reportsWaiting.mean.toFixed(1)}, most ${q.reportsWaiting.max}; event loop's longest stop between readings (250 ms): mean ${q.loopLagMs.mean.toFixed(0)}, most ${q.loopLagMs.max.toFixed(0)} ms`);
    }
    const statements = await topStatements(db);
    // PostgreSQL's own work in the window, which no replica asked for: autovacuum and checkpoints.
    {
      const { rows } = await db.query(
        `SELECT relname, autovacuum_count AS v, autoanalyze_count AS a,
                round(extract(epoch FROM now() - last_autovacuum)::numeric, 1) AS v_ago, round(extract(epoch FROM now() - last_autoanalyze)::numeric, 1) AS a_ago
           FROM pg_stat_user_tables WHERE autovacuum_count + autoanalyze_count > 0 ORDER BY relname`,
      );
      const bg = (await db.query('SELECT checkpoints_timed + checkpoints_req AS c FROM pg_stat_bgwriter')).rows[0];
      const windowAgo = (performance.now() - (queuesA.timeline[0]?.at ?? performance.now())) / 1000;
      log(`N=${n}: PostgreSQL's own work (window began ${windowAgo.toFixed(0)} s ago): checkpoints so far ${bg.c}; autovacuum so far: ${rows.map((r) => `${r.relname} vacuum ${r.v} (last ${r.v_ago ?? '-'} s ago), analyze ${r.a} (last ${r.a_ago ?? '-'} s ago)`).join('; ') || 'none'}`);
    }
    loopDelay.disable();
    const self1 = agentPids.map(sampleProc);
    const p1 = replicas.map((r) => sampleProc(r.proc.pid!));
    const db1 = (await db.query('SELECT xact_commit + xact_rollback AS tx, active_time FROM pg_stat_database WHERE datname = current_database()')).rows[0];
    const reportMs = fleet.takeReportLatencies().sort((x, y) => x - y);
    const reportsPerSec = (fleet.stats.reports - reports0) / SECONDS;
    // An agent keeps its connections (a real one does): new ones in the window show churn.
    const ended = Object.entries(fleet.stats.disconnects).map(([why, c]) => [why, c - (disconnects0[why] ?? 0)] as const).filter(([, c]) => c > 0);
    if (!(fleet instanceof ForkedFleet)) log(`N=${n}: the agents opened ${fleet.stats.connects - connects0} connection(s) in the window; ended: ${ended.map(([why, c]) => `${why} ${c}`).join(', ') || 'none'}`);
    const conns = (await db.query('SELECT count(*)::int AS c FROM pg_stat_activity WHERE datname = current_database()')).rows[0].c as number;
    // Changes still pending after a minute are reported (as not arrived), not thrown away with the run.
    const lateAfterWindow = await tracker.settled(60_000).then(() => 0, () => tracker.pending.size);
    const lat = [...tracker.latenciesMs].sort((x, y) => x - y);
    if (changeErrors.length) log(`N=${n}: ${changeErrors.length} change request(s) failed at the API, e.g. ${String(changeErrors[0])}${(changeErrors[0] as { cause?: unknown })?.cause ? ` (${String((changeErrors[0] as { cause?: unknown }).cause)})` : ''}`);
    log(`N=${n}: ${lat.length} changes, p50 ${percentile(lat, 50).toFixed(0)} ms, p99 ${percentile(lat, 99).toFixed(0)} ms; ${reportsPerSec.toFixed(1)} reports/s`);
    const kinds = (['action', 'sliver'] as const).map((k) => {
      const l = [...tracker.byKind[k]].sort((x, y) => x - y);
      const api = [...apiMs[k]].sort((x, y) => x - y);
      return `${k === 'action' ? 'actions' : 'new slivers'} ${l.length}: p50 ${percentile(l, 50).toFixed(0)}, p99 ${percentile(l, 99).toFixed(0)} ms (the API's answer: p50 ${percentile(api, 50).toFixed(0)}, p99 ${percentile(api, 99).toFixed(0)} ms)`;
    });
    const after = [...tracker.afterAnswerMs].sort((x, y) => x - y);
    log(`N=${n}: ${kinds.join('; ')}; from the API's answer to the node (fan-out and the woken poll's read): p50 ${percentile(after, 50).toFixed(0)}, p99 ${percentile(after, 99).toFixed(0)}, max ${(after.at(-1) ?? NaN).toFixed(0)} ms`);

    // The slow changes against replica A's nodes' lane: how deep it was while each was on its way,
    // and, per 5 s of the window, the lane, A's event loop and the changes over 1 s made then.
    {
      const tl = queuesA.timeline;
      const laneMax = (from: number, to: number) => Math.max(0, ...tl.filter((x) => x.at >= from && x.at <= to + 250 && Number.isFinite(x.nodesWaiting)).map((x) => x.nodesWaiting));
      const inWindow = tracker.arrived.filter((c) => tl.length && c.t0 >= tl[0]!.at - 1000);
      const depthOf = (cs: typeof inWindow) => cs.map((c) => laneMax(c.t0, c.t0 + c.ms)).sort((x, y) => x - y);
      const slow = depthOf(inWindow.filter((c) => c.ms > 1000));
      const quick = depthOf(inWindow.filter((c) => c.ms <= 1000));
      log(`N=${n}: changes over 1 s: ${slow.length} of ${inWindow.length}; the most waiting in A's nodes' lane while each was on its way: median ${percentile(slow, 50)}, max ${slow.at(-1) ?? NaN}; for the others: median ${percentile(quick, 50)}, max ${quick.at(-1) ?? NaN}`);
      if (tl.length) {
        const buckets: string[] = [];
        const deep: { from: number; lane: number }[] = [];
        // Answers between the first and last reading of a span: the nodes' polls and reports that arrived then.
        const arrivals = (xs: typeof tl, k: 'polls' | 'reports') => (xs.length > 1 ? xs.at(-1)![k] - xs[0]![k] : NaN);
        for (let from = tl[0]!.at; from < tl.at(-1)!.at; from += 5000) {
          const xs = tl.filter((x) => x.at >= from && x.at < from + 5000);
          const slowThen = inWindow.filter((c) => c.ms > 1000 && c.t0 >= from && c.t0 < from + 5000).length;
          const lane = Math.max(0, ...xs.map((x) => x.nodesWaiting).filter(Number.isFinite));
          deep.push({ from, lane });
          // A's garbage collection in the span (its GC seconds between the reading before it and its last one).
          const before = tl.filter((x) => x.at < from).at(-1) ?? xs[0];
          const gcMs = (k: 'gcSeconds' | 'majorGcSeconds') => (before && xs.length ? (xs.at(-1)![k] - before[k]) * 1000 : NaN);
          const vacuum = running.filter((r) => r.at >= from && r.at < from + 5000 && Object.keys(r.running).some((q) => q.startsWith('autovacuum:'))).length;
          buckets.push(`${((from - tl[0]!.at) / 1000).toFixed(0)} s: lane ${lane}, loop ${Math.max(0, ...xs.map((x) => x.loopLagMs).filter(Number.isFinite)).toFixed(0)} ms, slow ${slowThen}, polls ${arrivals(xs, 'polls')}, reports ${arrivals(xs, 'reports')}, gc ${gcMs('gcSeconds').toFixed(0)} ms (major ${gcMs('majorGcSeconds').toFixed(0)}), autovacuum seen ${vacuum}×`);
        }
        log(`N=${n}: replica A per 5 s of the window (most waiting in the nodes' lane, longest event-loop stop, changes over 1 s made then, polls and reports A answered, A's garbage collection, readings of PostgreSQL with an autovacuum running): ${buckets.join('; ')}`);
        // What PostgreSQL ran while A's lane was deepest, beside what it ran over the whole window.
        log(`N=${n}: statements running on PostgreSQL over the window (sum of 250 ms readings): ${mostRunning(running, -Infinity, Infinity, 5)}`);
        for (const d of deep.sort((x, y) => y.lane - x.lane).slice(0, 3)) {
          log(`N=${n}: ... in the 5 s from ${((d.from - tl[0]!.at) / 1000).toFixed(0)} s (lane ${d.lane}): ${mostRunning(running, d.from, d.from + 5000, 5)}`);
        }
      }
    }

    // Kill B: its agents move to A; changes made for them during the move must all arrive. A kill
    // that cannot complete is recorded beside the window's figures, not in place of them.
    const agents = fleet;
    const kill = await killPhase().catch((err: unknown): Result['kill'] => {
      log(`N=${n}: kill of B did not complete: ${String(err)}; ${openFiles(A.proc.pid!)}`);
      return { error: err instanceof Error ? err.message : String(err) };
    });
    async function killPhase(): Promise<Result['kill']> {
      const before = tracker.latenciesMs.length;
      const moving = onB();
      const tKill = performance.now();
      B.proc.kill('SIGKILL');
      agents.markDead(1);
      await driveChanges(5000, () => randomOf(moving));
      while (moving.some((a) => a.replica !== 0 || a.answered === 0) && performance.now() - tKill < 300_000) await sleep(50);
      const notMoved = moving.filter((a) => a.replica !== 0 || a.answered === 0).length;
      await tracker.settled(120_000).catch(() => undefined);
      const convergeMs = notMoved === 0 && tracker.pending.size === 0 ? performance.now() - tKill : NaN;
      const killLat = tracker.latenciesMs.slice(before).sort((x, y) => x - y);
      // Every agent must hold exactly what A serves now.
      // A replica holding every agent's two connections sits at this machine's file limit (20,000,
      // which the benchmark cannot raise): a check it cannot answer is counted, not taken as stale.
      let stale = 0;
      let unchecked = 0;
      let why = '';
      await inBatches(agents.agents, 32, async (a) => {
        try {
          // Two tries each: eight (about 14 s) for each of thousands of agents A cannot answer
          // kept the 12:28 run's check going for over ten minutes.
          const { etag } = await agents.fetchDocument(a, 0, 2);
          if (etag !== a.etag) stale++;
        } catch (err) {
          unchecked++;
          why ||= String(err);
        }
      });
      log(`N=${n}: kill of B: ${moving.length} agents moved, all current after ${(convergeMs / 1000).toFixed(1)} s; ${stale} stale${unchecked ? `; ${unchecked} not checked (${why})` : ''}; ${openFiles(A.proc.pid!)}`);
      return { notMoved, agentsMoved: moving.length, convergeMs, changes: killLat.length, p99: percentile(killLat, 99), max: killLat.at(-1) ?? NaN, lost: tracker.pending.size, stale, unchecked };
    }

    return {
      nodes: n,
      load: loadavg().map((l) => l.toFixed(2)).join(' '),
      changes: lat.length,
      p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat.at(-1) ?? NaN,
      reportsPerSec, reportP50: percentile(reportMs, 50), reportP99: percentile(reportMs, 99), reportErrors: fleet.stats.reportErrors,
      replicas: replicas.map((r, i) => ({ name: i === 0 ? 'A' : 'B', cpu: cpuShare(p0[i]!, p1[i]!), rssMb: p1[i]!.rssKb / 1024 })),
      pgConnections: conns,
      dbMsPerStatementTx: (Number(db1.active_time) - Number(db0.active_time)) / Math.max(1, Number(db1.tx) - Number(db0.tx)),
      txPerSec: (Number(db1.tx) - Number(db0.tx)) / SECONDS,
      changeErrors: changeErrors.length,
      lateAfterWindow,
      waits,
      queuesA,
      statements,
      agentsCpu: agentPids.reduce((sum, _, i) => sum + cpuShare(self0[i]!, self1[i]!), 0), loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
      kill,
    };
  } finally {
    await fleet?.stop();
    await db.end().catch(() => undefined);
    for (const r of replicas) { await r.stop().catch(() => undefined); live.delete(r); }
    rmSync(tlsDir, { recursive: true, force: true });
  }
}

function svgPlot(results: Result[]): string {
  const series = [['p50', '#1f77b4'], ['p99', '#d62728'], ['max', '#7f7f7f']] as const;
  return lineChart({
    title: `change → node latency across two replicas (K = ${K} slivers per node)`,
    xLabel: 'simulated agents (N)',
    yLabel: 'ms',
    minY: 1000,
    lines: [{ label: 'target p99 1 s', color: '#2ca02c', y: 1000 }],
    series: series.map(([key, color]) => ({ label: key, color, points: results.map((r) => [r.nodes, r[key]] as [number, number]) })),
  });
}

/** The five statements that took most of PostgreSQL's execution time since the last reset. */
async function topStatements(db: pg.Client): Promise<string[]> {
  const { rows } = await db.query(
    `SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS q, calls, total_exec_time AS total, mean_exec_time AS mean, rows, shared_blks_dirtied AS dirtied,
            total_exec_time / NULLIF(sum(total_exec_time) OVER (), 0) AS share
     FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
     ORDER BY total_exec_time DESC LIMIT 5`,
  );
  return rows.map((r) => `${(Number(r.share) * 100).toFixed(0)} %, ${r.calls} calls, ${Number(r.mean).toFixed(2)} ms, ${(Number(r.rows) / Math.max(1, Number(r.calls))).toFixed(1)} rows, ${(Number(r.dirtied) / Math.max(1, Number(r.calls))).toFixed(1)} dirtied: \`${r.q}…\``);
}

async function main(): Promise<void> {
  let pgServer: PostgresServer | undefined;
  let redis: RedisServer | undefined;
  const results: Result[] = [];
  const failures: string[] = [];
  const loadBefore = loadavg().map((l) => l.toFixed(2)).join(' ');
  try {
    pgServer = await startPostgres({ settings: ['shared_preload_libraries=pg_stat_statements', ...(args['pg-setting'] ?? [])] });
    redis = await startRedis();
    for (const n of NODES) {
      // A size the machine cannot carry is a figure too: record why, and go on with the next.
      try {
        results.push(await runOne(pgServer, redis, n));
      } catch (err) {
        failures.push(`N=${n}: ${err instanceof Error ? err.message : String(err)}`);
        log(`N=${n} failed: ${failures.at(-1)}`);
      }
    }
  } finally {
    await redis?.stop();
    await pgServer?.stop();
  }
  const pgVersion = (() => {
    try {
      const base = '/usr/lib/postgresql';
      const v = execFileSync('ls', [base], { encoding: 'utf8' }).split('\n').filter((s) => /^\d+$/.test(s)).sort((a, b) => Number(b) - Number(a))[0];
      return /\(PostgreSQL\) (\S+)/.exec(execFileSync(`${base}/${v}/bin/postgres`, ['--version'], { encoding: 'utf8' }))?.[1] ?? '?';
    } catch { return '?'; }
  })();
  const f0 = (v: number) => (Number.isFinite(v) ? v.toFixed(0) : '–');
  const f1 = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : '–');
  const lines = [
    `### Fleet: change → node across two replicas — ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, PostgreSQL ${pgVersion}, Redis fan-out; shared with other engineers' test runs (load average 1/5/15 min: ${loadBefore} at start, beside each row at its end).`,
    `Command: \`node scripts/bench/fleet.ts --nodes ${NODES.join(',')} --slivers-per-node ${K} --seconds ${SECONDS} --changes-per-second ${RATE} --report-seconds ${REPORT_SECONDS} --settle ${SETTLE}${RAMP ? ` --ramp ${RAMP}` : ''}${STORM_SECONDS !== 300 ? ` --storm-seconds ${STORM_SECONDS}` : ''}${MOVING_USAGE ? ' --moving-usage' : ''}${AGENTS_NICE ? ` --agents-nice ${AGENTS_NICE}` : ''}${(args['pg-setting'] ?? []).map((kv) => ` --pg-setting ${kv}`).join('')}${args['replica-node-options'] ? ` --replica-node-options="${args['replica-node-options']}"` : ''}\``,
    `Two HTTPS replicas (one CA) on one PostgreSQL and one Redis; simulated agents in worker processes of up to 2,500 (undici pools; \`--processes\` changes that)${AGENTS_NICE ? ` at nice ${AGENTS_NICE}` : ''}, half on each replica, each holding \`?wait=25\` long-polls with ETags and reporting every ${REPORT_SECONDS} s (spread out) with its ${K} slivers (${MOVING_USAGE ? 'new figures in every report' : 'the same figures every time'}). Changes: ${RATE}/s through replica A for agents on replica B (4 of 5 a stop/start of a sliver, 1 of 5 a new sliver), timed until the agent's long-poll returns the document holding it.`,
    '',
    '| N | changes arrived (API errors, not arrived 60 s after) | p50 ms | p99 ms | max ms | reports/s | report p50/p99 ms | A: CPU, RSS MB | B: CPU, RSS MB | CPU per 1,000 agents (A+B) | RSS MB per 1,000 agents (A+B) | PG conns | PG tx/s | PG ms per tx | agents\' process: CPU, loop delay p99 ms | load avg |',
    '|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---|---|',
    ...results.map((r) => {
      const [a, b] = r.replicas as [Result['replicas'][0], Result['replicas'][0]];
      return `| ${r.nodes} | ${r.changes} (${r.changeErrors}, ${r.lateAfterWindow}) | ${f0(r.p50)} | ${f0(r.p99)} | ${f0(r.max)} | ${f1(r.reportsPerSec)} | ${f0(r.reportP50)} / ${f0(r.reportP99)} | ${(a.cpu * 100).toFixed(0)} %, ${f0(a.rssMb)} | ${(b.cpu * 100).toFixed(0)} %, ${f0(b.rssMb)} | ${((a.cpu + b.cpu) * 100 / (r.nodes / 1000)).toFixed(1)} % | ${f0((a.rssMb + b.rssMb) / (r.nodes / 1000))} | ${r.pgConnections} | ${f0(r.txPerSec)} | ${r.dbMsPerStatementTx.toFixed(2)} | ${(r.agentsCpu * 100).toFixed(0)} %, ${f0(r.loopDelayP99Ms)} | ${r.load} |`;
    }),
    '',
    'PostgreSQL backends of the database in the window (pg_stat_activity every 250 ms, mean count per state and wait event, busiest five; idle ones left out):',
    '',
    ...results.map((r) => `- N=${r.nodes}: ${r.waits}`),
    '',
    "Replica A's queues in the window (its /metrics every 250 ms): PostgreSQL connections busy (mean); queries waiting for a connection, nodes' queries waiting for their lane of the pool (all but a fifth of it), and nodes' reports waiting for their turn to be written (mean, most):",
    '',
    ...results.map((r) => `- N=${r.nodes}: ${r.queuesA.poolBusy.toFixed(1)} busy; queries waiting ${r.queuesA.poolWaiting.mean.toFixed(1)}, ${r.queuesA.poolWaiting.max}; nodes' queries waiting ${r.queuesA.nodesWaiting.mean.toFixed(1)}, ${r.queuesA.nodesWaiting.max}; reports waiting ${r.queuesA.reportsWaiting.mean.toFixed(1)}, ${r.queuesA.reportsWaiting.max}`),
    '',
    'Where PostgreSQL\'s time went in the window (pg_stat_statements: the five statements with the most execution time; share of all statements\' time, calls, mean ms, rows per call, blocks dirtied per call):',
    '',
    ...results.flatMap((r) => [`- N=${r.nodes}:`, ...r.statements.map((l) => `  - ${l}`)]),
    '',
    'Replica B killed (SIGKILL) after the measured window, with changes for its agents made through A for 5 s after:',
    '',
    '| N | agents moved (not answered by A after 300 s) | all current after s | changes during the move | their p99 / max ms | changes lost | agents stale vs A (not checked) |',
    '|---:|---:|---:|---:|---|---:|---:|',
    ...results.map(({ nodes, kill: k }) => 'error' in k
      ? `| ${nodes} | did not complete: ${k.error.replaceAll('|', '/')} | | | | | |`
      : `| ${nodes} | ${k.agentsMoved} (${k.notMoved}) | ${f1(k.convergeMs / 1000)} | ${k.changes} | ${f0(k.p99)} / ${f0(k.max)} | ${k.lost} | ${k.stale} (${k.unchecked}) |`),
    '',
    ...failures.map((f) => `Did not complete: ${f}`),
    ...(failures.length ? [''] : []),
    'CPU is the share of one core over the measured window. "PG ms per tx" is pg_stat_database active_time over committed+rolled-back transactions in the window (every statement of polls, reports and changes; the statements one by one are in the list above). "PG conns" counts pg_stat_activity rows for the database (both replicas\' pools).',
    '',
  ];
  const text = lines.join('\n');
  console.log(text);
  if (args.write) {
    appendResults(args.write, text);
    log(`appended to ${args.write}`);
  }
  if (args.svg && results.length > 0) {
    const file = resolve(ROOT, args.svg);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, svgPlot(results));
    log(`wrote ${args.svg}`);
  }
}

main().catch((err: unknown) => {
  console.error(`fleet: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exit(1);
});
