// The fleet's simulated agents spread over worker processes: one process cannot hold 10,000
// agents here (two connections each, and 20,000 open files at most per process: `ulimit -Hn`).
// ForkedFleet is what fleet.ts drives instead of a Fleet: the same calls, with each worker
// running a Fleet of its share and sending back every document its agents receive (for the
// change tracker, at the worker's own clock mapped onto this one), which replica each polls,
// and its report figures.
import { fork, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { DesiredState } from '@planetlite/api';
import { Fleet, type FleetOptions, type FleetReplica, type SimAgent } from './fleet-agents.ts';

/** Agents one worker process holds at most (two connections each under a 20,000 open-file limit). */
export const AGENTS_PER_PROCESS = 8000;

/**
 * Worker processes for n agents by default: never the process that times the changes (one of
 * 5,000 agents stopped its event loop for up to a second, which every latency it stamped
 * carried), 2,500 agents each (two workers of 5,000 at 10,000 agents stopped theirs long enough
 * that reports timed out and piled up).
 */
export function workersFor(n: number): number {
  return Math.max(1, Math.ceil(n / 2500));
}

type ToWorker =
  | { t: 'init'; replicas: FleetReplica[]; connections: number; waitSeconds: number; reportSeconds: number; movingUsage: boolean; rampSeconds: number }
  | { t: 'add'; nodeId: string; key: string; replica: number }
  | { t: 'start' }
  | { t: 'dead'; replica: number }
  | { t: 'stop' };

type FromWorker =
  | { t: 'doc'; nodeId: string; etag: string | null; doc: DesiredState; at: number }
  | { t: 'stats'; reports: number; reportErrors: number; errors: Record<string, number>; reportMs: number[]; agents: Array<[string, number, number]> }
  | { t: 'stopped' };

/** A clock reading that means the same in every process (ms since the epoch, sub-ms precision). */
const wallNow = () => performance.timeOrigin + performance.now();

export class ForkedFleet {
  readonly agents: SimAgent[] = [];
  /** Connections are counted in the workers, not here (fleet.ts logs them for one process only). */
  readonly stats = { reports: 0, reportErrors: 0, connects: 0, disconnects: {} as Record<string, number>, errors: {} as Record<string, number> };
  readonly workers: ChildProcess[] = [];
  readonly #byNode = new Map<string, SimAgent>();
  readonly #reportsOf = new Map<ChildProcess, { reports: number; reportErrors: number; errors: Record<string, number> }>();
  #reportMs: number[] = [];
  /** For the parent's own fetches of a document (no agents of its own). */
  readonly #local: Fleet;

  /** nice: the workers' scheduling priority (0 as this process, up to 19 the lowest; see fleet.ts --agents-nice). */
  constructor(replicas: FleetReplica[], processes: number, opts: Required<Pick<FleetOptions, 'waitSeconds' | 'reportSeconds' | 'movingUsage' | 'rampSeconds'>> & Pick<FleetOptions, 'onDocument'>, nice = 0) {
    this.#local = new Fleet(replicas, 64, { reportSeconds: 0 });
    for (let i = 0; i < processes; i++) {
      const w = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, PL_FLEET_WORKER: '1' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      if (nice && w.pid) setPriority(w.pid, nice);
      this.#reportsOf.set(w, { reports: 0, reportErrors: 0, errors: {} });
      w.on('message', (m: FromWorker) => {
        if (m.t === 'doc') {
          const a = this.#byNode.get(m.nodeId);
          if (!a) return;
          a.doc = m.doc;
          a.etag = m.etag;
          opts.onDocument?.(a, m.doc, m.at - performance.timeOrigin);
        } else if (m.t === 'stats') {
          this.#reportsOf.set(w, { reports: m.reports, reportErrors: m.reportErrors, errors: m.errors });
          const all = [...this.#reportsOf.values()];
          this.stats.reports = all.reduce((s, r) => s + r.reports, 0);
          this.stats.reportErrors = all.reduce((s, r) => s + r.reportErrors, 0);
          this.stats.errors = {};
          for (const r of all) for (const [k, v] of Object.entries(r.errors)) this.stats.errors[k] = (this.stats.errors[k] ?? 0) + v;
          this.#reportMs.push(...m.reportMs);
          for (const [nodeId, replica, answered] of m.agents) {
            const a = this.#byNode.get(nodeId);
            if (a) Object.assign(a, { replica, answered });
          }
        }
      });
      this.#send(w, { t: 'init', replicas, connections: 32, waitSeconds: opts.waitSeconds, reportSeconds: opts.reportSeconds, movingUsage: opts.movingUsage, rampSeconds: opts.rampSeconds });
      this.workers.push(w);
    }
  }

  add(nodeId: string, key: string, replica: number): SimAgent {
    const a: SimAgent = { nodeId, key, replica, etag: null, doc: null, answered: 0, sent: 0, pools: [] };
    this.#send(this.workers[this.agents.length % this.workers.length]!, { t: 'add', nodeId, key, replica });
    this.agents.push(a);
    this.#byNode.set(nodeId, a);
    return a;
  }

  start(): void {
    for (const w of this.workers) this.#send(w, { t: 'start' });
  }

  markDead(replica: number): void {
    this.#local.markDead(replica);
    for (const w of this.workers) this.#send(w, { t: 'dead', replica });
  }

  fetchDocument(a: SimAgent, replica: number, attempts?: number): Promise<{ etag: string | null; doc: DesiredState }> {
    return this.#local.fetchDocument(a, replica, attempts);
  }

  /** Report latencies received since the last call (each worker sends them every 500 ms). */
  takeReportLatencies(): number[] {
    const out = this.#reportMs;
    this.#reportMs = [];
    return out;
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => new Promise<void>((resolve) => {
      if (w.exitCode !== null || w.signalCode !== null) return resolve();
      const t = setTimeout(() => w.kill('SIGKILL'), 30_000);
      w.once('exit', () => (clearTimeout(t), resolve()));
      this.#send(w, { t: 'stop' });
    })));
    await this.#local.stop();
  }

  #send(w: ChildProcess, m: ToWorker): void {
    if (w.connected) w.send(m);
  }
}

/** A worker: a Fleet of its share of the agents, told what to do by the parent. */
function worker(): void {
  let fleet: Fleet | null = null;
  const sent = new Map<string, string>();
  const send = (m: FromWorker) => process.send?.(m);
  const flush = () => {
    if (!fleet) return;
    // Where each agent polls, sent when it changed (a move, its first answer after one).
    const agents: Array<[string, number, number]> = [];
    for (const a of fleet.agents) {
      const now = `${a.replica}/${Math.min(a.answered, 1)}`;
      if (sent.get(a.nodeId) !== now) {
        sent.set(a.nodeId, now);
        agents.push([a.nodeId, a.replica, a.answered]);
      }
    }
    const reportMs = fleet.takeReportLatencies();
    send({ t: 'stats', reports: fleet.stats.reports, reportErrors: fleet.stats.reportErrors, errors: fleet.stats.errors, reportMs, agents });
  };
  const timer = setInterval(flush, 500);
  process.on('message', (m: ToWorker) => {
    switch (m.t) {
      case 'init':
        fleet = new Fleet(m.replicas, m.connections, {
          waitSeconds: m.waitSeconds, reportSeconds: m.reportSeconds, movingUsage: m.movingUsage, rampSeconds: m.rampSeconds,
          onDocument: (a, doc) => send({ t: 'doc', nodeId: a.nodeId, etag: a.etag, doc, at: wallNow() }),
        });
        return;
      case 'add':
        fleet!.add(m.nodeId, m.key, m.replica);
        return;
      case 'start':
        fleet!.start();
        return;
      case 'dead':
        fleet!.markDead(m.replica);
        return;
      case 'stop':
        clearInterval(timer);
        void fleet!.stop().finally(() => process.exit(0));
        return;
    }
  });
  // The parent gone: nothing left to do.
  process.on('disconnect', () => process.exit(0));
}

if (process.env.PL_FLEET_WORKER === '1') worker();
