// Simulated node agents for the fleet benchmark and its bounded test: real HTTP clients that hold
// the desired-state long-poll with ETags and send observed-state reports at the agent's cadence,
// thousands of them in one process. Each agent has connections of its own, as a real agent does
// (one for the held long-poll, one for reports), all sharing one TLS context per replica.
//
// An agent polls the replica it was given; when that replica stops answering (connection refused
// or reset) it moves to the next live one, as a real agent behind a DNS name or load balancer would.
import { createSecureContext, type SecureContext } from 'node:tls';
import { Pool } from 'undici';
import type { DesiredState, ObservedState } from '@planetlite/api';
// The sync module alone: the simulated agents' processes need not load the whole agent.
import { Backoff } from '@planetlite/agent/sync';

export interface FleetReplica {
  url: string;
  /** The registry's CA (PEM) when it serves HTTPS. */
  ca: string | null;
}

export interface SimAgent {
  nodeId: string;
  key: string;
  /** Index of the replica this agent polls now. */
  replica: number;
  etag: string | null;
  doc: DesiredState | null;
  /** Requests this agent completed on its current replica since it last moved. */
  answered: number;
  /** Reports sent (moves the figures of a report with movingUsage). */
  sent: number;
  /** This agent's own connections to each replica it has used (made on first use). */
  pools: Array<Pool | undefined>;
  /** The report under way: a real agent sends one at a time (the next waits for it). */
  reporting?: Promise<void>;
  /** A report waits behind the one under way: as the real agent, a tick meanwhile joins it. */
  reportWaiting?: boolean;
}

export interface FleetOptions {
  /** ?wait= of each long-poll, seconds. */
  waitSeconds?: number;
  /** Cadence of observed-state reports, seconds (the agent's is 30); 0: none. */
  reportSeconds?: number;
  /** Figures that move from report to report, as a real agent's do (cpu seconds, bytes); else the same every time. */
  movingUsage?: boolean;
  /** Agents start over this many seconds, each at a random instant (as agents that started at
   * different times); 0: all at once. */
  rampSeconds?: number;
  /** Called with every new document an agent receives (after agent.doc/etag are updated). */
  onDocument?: (agent: SimAgent, doc: DesiredState, at: number) => void;
}

export interface FleetStats {
  polls: number;
  documents: number;
  reports: number;
  reportErrors: number;
  pollErrors: number;
  moves: number;
  /** Latency of each report, ms (reset by takeReportLatencies). */
  reportMs: number[];
  /** Connections the agents opened, and why connections ended (undici's reason, counted). */
  connects: number;
  disconnects: Record<string, number>;
  /** Failed polls and reports by kind ("poll 503", "report UND_ERR_HEADERS_TIMEOUT"), counted. */
  errors: Record<string, number>;
}

/** A real agent gives up on a report after this long (the agent's REGISTRY_TIMEOUT_MS). */
const REPORT_TIMEOUT_MS = 30_000;

/** What a failed request is called in FleetStats.errors. */
function errorKind(what: 'poll' | 'report', err: unknown): string {
  const e = err as { code?: string; name?: string };
  return `${what} ${e?.code ?? e?.name ?? 'error'}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Connection-level failures that mean "this replica is gone", as opposed to an HTTP answer. */
function replicaGone(err: unknown): boolean {
  const code = (err as { code?: string })?.code ?? '';
  // Not a connect timeout: a replica busy with a storm of handshakes is slow, not gone.
  return ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_DESTROYED'].includes(code)
    || /other side closed|socket hang up/i.test(String((err as Error)?.message));
}

export class Fleet {
  readonly agents: SimAgent[] = [];
  readonly stats: FleetStats = { polls: 0, documents: 0, reports: 0, reportErrors: 0, pollErrors: 0, moves: 0, reportMs: [], connects: 0, disconnects: {}, errors: {} };
  /** A few connections per replica for the benchmark's own checks (fetchDocument). */
  readonly #shared: Pool[];
  /** One TLS context per replica (its CA parsed once), shared by every agent's connections. */
  readonly #tls: Array<SecureContext | null>;
  readonly #dead = new Set<number>();
  readonly #opts: Required<Omit<FleetOptions, 'onDocument'>> & Pick<FleetOptions, 'onDocument'>;
  #running = false;
  readonly #loops: Promise<void>[] = [];
  readonly #timers: NodeJS.Timeout[] = [];

  readonly replicas: FleetReplica[];

  constructor(replicas: FleetReplica[], sharedConnections: number, opts: FleetOptions = {}) {
    this.replicas = replicas;
    this.#opts = { waitSeconds: opts.waitSeconds ?? 25, reportSeconds: opts.reportSeconds ?? 30, movingUsage: opts.movingUsage ?? false, rampSeconds: opts.rampSeconds ?? 0, onDocument: opts.onDocument };
    this.#tls = replicas.map((r) => (r.ca ? createSecureContext({ ca: r.ca }) : null));
    this.#shared = replicas.map((_, i) => this.#pool(i, sharedConnections));
  }

  #pool(replica: number, connections: number): Pool {
    const tls = this.#tls[replica];
    const pool = new Pool(this.replicas[replica]!.url, {
      connections,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      // The long-poll holds the answer back for waitSeconds: allow for it plus a slow registry.
      headersTimeout: (this.#opts.waitSeconds + 60) * 1000,
      bodyTimeout: 60_000,
      // A connection may take as long to open as the agent's own allow (trustRegistry's 60 s, not
      // undici's 10 s): in a reconnect storm the replica accepts late.
      connect: { timeout: 60_000, ...(tls ? { secureContext: tls } : {}) },
    });
    pool.on('connect', () => this.stats.connects++);
    pool.on('disconnect', (_origin, _targets, err: Error & { code?: string }) => {
      const why = err?.code ?? err?.message ?? 'unknown';
      this.stats.disconnects[why] = (this.stats.disconnects[why] ?? 0) + 1;
    });
    return pool;
  }

  /** The agent's connections to a replica: two, as a real agent's long-poll and reports use. */
  #poolOf(a: SimAgent, replica: number): Pool {
    return (a.pools[replica] ??= this.#pool(replica, 2));
  }

  add(nodeId: string, key: string, replica: number): SimAgent {
    const a: SimAgent = { nodeId, key, replica, etag: null, doc: null, answered: 0, sent: 0, pools: [] };
    this.agents.push(a);
    if (this.#running) this.#launch(a);
    return a;
  }

  start(): void {
    this.#running = true;
    for (const a of this.agents) this.#launch(a);
  }

  /** Marks a replica as gone (as its agents would find out), so moves skip it. */
  markDead(i: number): void {
    this.#dead.add(i);
  }

  /** The replica's answer for this agent's document (what the agent should end up holding). */
  async fetchDocument(a: SimAgent, replica: number, attempts = 8): Promise<{ etag: string | null; doc: DesiredState }> {
    const get = () => this.#shared[replica]!.request({ method: 'GET', path: `/v1/nodes/${a.nodeId}/desired-state`, headers: { authorization: `Bearer ${a.key}` } });
    // A live replica under load may reset a connection or answer 503 (out of file descriptors
    // with every agent on it): an agent retries, and so does this check, for up to about 20 s
    // (one reset at 10,000 agents ended a whole run); a GET is safe to send again.
    let res;
    for (let attempt = 1; ; attempt++) {
      try {
        res = await get();
        if (res.statusCode !== 503 || attempt >= attempts) break;
        await res.body.dump();
      } catch (err) {
        if (attempt >= attempts || !replicaGone(err) || this.#dead.has(replica)) throw new Error(`desired-state of ${a.nodeId} from replica ${replica}: ${String(err)}`, { cause: err });
      }
      await sleep(500 * attempt);
    }
    if (res.statusCode !== 200) throw new Error(`desired-state of ${a.nodeId}: HTTP ${res.statusCode} ${await res.body.text()}`);
    return { etag: (res.headers.etag as string | undefined) ?? null, doc: (await res.body.json()) as DesiredState };
  }

  takeReportLatencies(): number[] {
    const out = this.stats.reportMs;
    this.stats.reportMs = [];
    return out;
  }

  async stop(): Promise<void> {
    this.#running = false;
    for (const t of this.#timers) clearTimeout(t);
    // Destroying the pools aborts the held long-polls; the loops see #running false and end.
    const pools = [...this.#shared, ...this.agents.flatMap((a) => a.pools.filter((p) => p !== undefined))];
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
    await Promise.all(this.#loops);
  }

  #launch(a: SimAgent): void {
    const ramp = this.#opts.rampSeconds * 1000;
    this.#loops.push(ramp > 0 ? sleep(Math.random() * ramp).then(() => this.#pollLoop(a)) : this.#pollLoop(a));
    if (this.#opts.reportSeconds > 0) {
      const period = this.#opts.reportSeconds * 1000;
      // Spread the reports evenly over the period, as agents that started at random times are.
      // Each next report is due one period after the last one was due, not one period after a
      // late timer fired: every simulated agent is a machine of its own, and timers that this
      // process's stopped event loop let go together would otherwise stay together (at 10,000
      // agents, a replica saw 2,100 reports in 5 s against 450, every 30 s).
      let due = performance.now() + Math.random() * period;
      const tick = () => {
        if (!this.#running) return;
        if (!a.reportWaiting) {
          a.reportWaiting = true;
          const prev = a.reporting ?? Promise.resolve();
          a.reporting = prev.then(() => {
            a.reportWaiting = false;
            return this.#report(a);
          });
        }
        const now = performance.now();
        do due += period;
        while (due <= now);
        this.#timers.push(setTimeout(tick, due - now).unref());
      };
      this.#timers.push(setTimeout(tick, due - performance.now()).unref());
    }
  }

  /**
   * Moves an agent off a replica that failed it. One failed connection does not make a replica
   * dead for every agent: under load a live replica can reset a connection, and an agent that
   * moved away on such a reset must still be able to come back when the other replica dies (an
   * earlier version marked the replica dead here, and one run left 2,507 agents on a killed B
   * with nowhere to go). Only markDead, the bench's own knowledge, rules a replica out; with no
   * other replica left, the agent stays and retries where it is.
   */
  #move(a: SimAgent, from: number): void {
    if (a.replica !== from) return;
    const live = this.replicas.map((_, i) => i).filter((i) => i !== from && !this.#dead.has(i));
    if (live.length === 0) return;
    a.replica = live[Math.floor(Math.random() * live.length)]!;
    a.answered = 0;
    this.stats.moves++;
  }

  async #pollLoop(a: SimAgent): Promise<void> {
    // The agent's own backoff (0.5 s doubling to 30 s, jittered).
    const backoff = new Backoff();
    while (this.#running) {
      const replica = a.replica;
      try {
        const headers: Record<string, string> = { authorization: `Bearer ${a.key}` };
        if (a.etag) headers['if-none-match'] = a.etag;
        // Long-poll once the document is known on this replica; after a move, first ask without
        // waiting, so an agent that missed a change while it moved gets it at once.
        const wait = a.etag && a.answered > 0 ? this.#opts.waitSeconds : 0;
        const res = await this.#poolOf(a, replica).request({ method: 'GET', path: `/v1/nodes/${a.nodeId}/desired-state?wait=${wait}`, headers });
        this.stats.polls++;
        if (res.statusCode === 200) {
          const doc = (await res.body.json()) as DesiredState;
          a.doc = doc;
          a.etag = (res.headers.etag as string | undefined) ?? null;
          a.answered++;
          this.stats.documents++;
          this.#opts.onDocument?.(a, doc, performance.now());
        } else {
          await res.body.dump();
          if (res.statusCode === 304) a.answered++;
          else {
            this.stats.pollErrors++;
            this.#count(`poll ${res.statusCode}`);
            await sleep(500);
          }
        }
        backoff.succeeded();
      } catch (err) {
        if (!this.#running) return;
        this.stats.pollErrors++;
        this.#count(errorKind('poll', err));
        if (replicaGone(err)) this.#move(a, replica);
        await sleep(backoff.failed());
      }
    }
  }

  #count(kind: string): void {
    this.stats.errors[kind] = (this.stats.errors[kind] ?? 0) + 1;
  }

  async #report(a: SimAgent): Promise<void> {
    const replica = a.replica;
    const tick = this.#opts.movingUsage ? ++a.sent : 0;
    const body: ObservedState = {
      slivers: (a.doc?.slivers ?? []).map((s, i) => ({
        id: s.id,
        state: s.desired === 'stopped' ? 'stopped' : 'running',
        error: null,
        cpu_seconds: 12.5 + i + tick * 0.07,
        memory_bytes: 64 * 1024 * 1024 + (tick % 7) * 4096,
        disk_bytes: 512 * 1024 * 1024,
        net_rx_bytes: 1_000_000 + i + tick * 1500,
        net_tx_bytes: 2_000_000 + i + tick * 900,
      })),
    };
    const t0 = performance.now();
    try {
      const res = await this.#poolOf(a, replica).request({
        method: 'PUT', path: `/v1/nodes/${a.nodeId}/observed-state`,
        headers: { authorization: `Bearer ${a.key}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        headersTimeout: REPORT_TIMEOUT_MS,
        bodyTimeout: REPORT_TIMEOUT_MS,
      });
      await res.body.dump();
      if (res.statusCode < 300) {
        this.stats.reports++;
        this.stats.reportMs.push(performance.now() - t0);
      } else {
        this.stats.reportErrors++;
        this.#count(`report ${res.statusCode}`);
      }
    } catch (err) {
      if (!this.#running) return;
      this.stats.reportErrors++;
      this.#count(errorKind('report', err));
      if (replicaGone(err)) this.#move(a, replica);
    }
  }
}

/** Runs fn over items with at most `limit` at a time. */
export async function inBatches<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  }));
  return out;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Changes made through the API, waiting for the owning agent's long-poll to bring them: a sliver
 * action (its desired value) or a new sliver (its slice appears in the node's document).
 */
export class ChangeTracker {
  readonly latenciesMs: number[] = [];
  /** The same latencies by kind of change: a sliver action, or a new sliver. */
  readonly byKind: { action: number[]; sliver: number[] } = { action: [], sliver: [] };
  /** From the API's answer until the node had the document (0: it had it before the answer came):
   * the registry's way to the node (fan-out, the woken poll's read), without the API's own time. */
  readonly afterAnswerMs: number[] = [];
  /** Each change that arrived: when it was made (performance.now()) and how long it took. */
  readonly arrived: { t0: number; ms: number }[] = [];
  /** key → the change; key is `${nodeId}|${sliverId or slice}`. */
  readonly pending = new Map<string, { t0: number; answeredAt?: number; slice?: string; sliverId?: string; desired?: string }>();
  made = 0;

  expectAction(nodeId: string, sliverId: string, desired: string, t0: number): void {
    this.made++;
    this.pending.set(`${nodeId}|${sliverId}`, { t0, sliverId, desired });
  }

  expectSliver(nodeId: string, slice: string, t0: number): void {
    this.made++;
    this.pending.set(`${nodeId}|${slice}`, { t0, slice });
  }

  /**
   * Whether a change to this node has not reached it yet. Make no second change to such a node: a
   * stop undone by a start before the node's next poll leaves the document as it was (the same
   * ETag), so the node rightly never gets a new document and the first change would look lost.
   */
  pendingOn(nodeId: string): boolean {
    for (const key of this.pending.keys()) if (key.startsWith(`${nodeId}|`)) return true;
    return false;
  }

  /** The API answered the change at `at` (it may already have reached its node). */
  answered(nodeId: string, sliverIdOrSlice: string, at: number): void {
    const p = this.pending.get(`${nodeId}|${sliverIdOrSlice}`);
    if (p) p.answeredAt = at;
  }

  /** The API refused or dropped the change: nothing to wait for. */
  forget(nodeId: string, sliverIdOrSlice: string): void {
    if (this.pending.delete(`${nodeId}|${sliverIdOrSlice}`)) this.made--;
  }

  /** Feed every document an agent receives. */
  seen(agent: SimAgent, doc: DesiredState, at: number): void {
    if (this.pending.size === 0) return;
    for (const s of doc.slivers) {
      for (const key of [`${agent.nodeId}|${s.id}`, `${agent.nodeId}|${s.slice}`]) {
        const p = this.pending.get(key);
        if (!p) continue;
        if (p.desired !== undefined && s.desired !== p.desired) continue;
        this.latenciesMs.push(at - p.t0);
        this.byKind[p.slice !== undefined ? 'sliver' : 'action'].push(at - p.t0);
        this.afterAnswerMs.push(p.answeredAt === undefined ? 0 : Math.max(0, at - p.answeredAt));
        this.arrived.push({ t0: p.t0, ms: at - p.t0 });
        this.pending.delete(key);
      }
    }
  }

  /** Resolves when nothing is pending, or rejects after timeoutMs naming what is still missing. */
  async settled(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending.size > 0) {
      if (Date.now() > deadline) throw new Error(`${this.pending.size} change(s) never reached their node, e.g. ${[...this.pending.keys()].slice(0, 3).join(', ')}`);
      await sleep(20);
    }
  }
}
