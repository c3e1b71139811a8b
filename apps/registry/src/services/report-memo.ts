// Reports that say nothing new. An agent reports every 30 s, and nearly every report repeats the
// last one but for its slivers' figures (cpu seconds, bytes). A replica remembers, per node, what
// the last report it wrote said and the desired-state ETag it was written against; a report that
// says the same while that ETag still stands needs no statement of its own. The node's last_seen
// is queued, and so are its figures when a usage sample is due (about once an interval), and
// written for all such nodes at once, every second, as usage samples alone: a sliver shows the
// newer of its row's figures and its latest sample's, with their time. Rewriting every row at
// every report (a real agent's cpu seconds always move) was two thirds of PostgreSQL's time at
// 10,000 nodes; rewriting it with every sample was still half of the flush.
import { createHash, randomUUID } from 'node:crypto';
import type { ObservedState, SliverUsage } from '@planetlite/api';
import type { Database } from '@planetlite/db';
import type { Fanout } from '@planetlite/fanout';
import type { Logger } from '@planetlite/core';
import { writeQueuedUsage, type QueuedUsage } from '../repositories/reports.js';
import { touchNodesSeen } from '../repositories/nodes.js';
import type { DocumentCache } from './desired-state.js';
import { withChanges, type ChangeDeps } from './changes.js';
import { markSeen } from './node-lifecycle.js';

/** Replicas tell each other which nodes' reports they wrote: another replica's memo of them is stale. */
export const REPORTS_CHANNEL = 'reports';

/** Rows (slivers' figures, or nodes) per statement of a flush. Short statements: a user's change
 * to a sliver waits for the one holding its row, and at 5,000 nodes 250 rows took 14 ms of
 * PostgreSQL (57 µs a row) where 1,700 took 278 ms (163 µs a row; docs/benchmarks.md). */
export const FLUSH_BATCH = 250;

const USAGE_FIELDS = ['cpu_seconds', 'memory_bytes', 'disk_bytes', 'net_rx_bytes', 'net_tx_bytes'] as const;

export interface ReportMemoOptions extends ChangeDeps {
  documents: DocumentCache;
  /** One usage sample per sliver per this many seconds. */
  sampleSeconds: number;
  /** last_seen is rewritten once it is this old. */
  seenRefreshSeconds: number;
  /** How often queued figures and last_seen are written. */
  flushMs?: number;
  /** Nodes remembered at most. */
  max?: number;
}

interface Memo {
  /** What the report said, figures left out. */
  says: string;
  /** The node's desired-state ETag when it was written. */
  etag: string;
  epoch: number;
  seenAt: number;
  sampledAt: number;
}

/** A report being written: it is remembered only if nothing about its node moved meanwhile. */
export interface ReportTicket {
  nodeId: string;
  etag: string | undefined;
  epoch: number;
  stale: boolean;
  /** When the node's last sample was asked for, as remembered at begin() (0: not known here). */
  sampledAt: number;
}

/** The report with its figures left out, as a short digest. */
function digest(value: unknown): string {
  return createHash('sha1').update(JSON.stringify(value)).digest('base64');
}

function usageOf(s: ObservedState['slivers'][number]): SliverUsage | null {
  const u: SliverUsage = {};
  let any = false;
  for (const f of USAGE_FIELDS) {
    if (s[f] !== undefined) {
      u[f] = s[f];
      any = true;
    }
  }
  return any ? u : null;
}

/** What a report says (states, errors, addresses, holds, images, capabilities, front door, spares), its figures left out. */
export function reportDigests(body: ObservedState): { says: string } {
  const slivers = body.slivers.map((s) => {
    const { cpu_seconds: _c, memory_bytes: _m, disk_bytes: _d, net_rx_bytes: _r, net_tx_bytes: _t, ...rest } = s;
    return rest;
  });
  return {
    // Spares are stored as listed (absent: none), so a change of the pool alone makes the report written.
    says: digest([slivers, body.images ?? null, body.capabilities ?? null, body.front_door === undefined ? '-' : body.front_door, body.spares ?? []]),
  };
}

export class ReportMemo {
  readonly #deps: ReportMemoOptions;
  readonly #id = randomUUID();
  readonly #memos = new Map<string, Memo>();
  readonly #tickets = new Map<string, Set<ReportTicket>>();
  #seen = new Set<string>();
  #usage = new Map<string, QueuedUsage>();
  #timer: NodeJS.Timeout | null = null;
  #flushing: Promise<void> | null = null;
  #unsubscribe: (() => void) | null = null;
  #closed = false;
  /** Reports answered from memory, and statements written for them (metrics, tests). */
  readonly stats = { absorbed: 0, flushes: 0, samples: 0, seenWritten: 0 };

  constructor(deps: ReportMemoOptions) {
    this.#deps = deps;
  }

  async start(): Promise<void> {
    this.#unsubscribe = await this.#deps.fanout.subscribe(REPORTS_CHANNEL, (message) => {
      const [from, nodeId] = message.split(' ');
      if (from !== this.#id && nodeId) this.forget(nodeId);
    });
    this.#timer = setInterval(() => void this.flush(), this.#deps.flushMs ?? 1000);
    this.#timer.unref();
  }

  /**
   * Takes the report without a statement when it says what the last one written here said, and the
   * node's desired state has not moved since (its ETag in the DocumentCache). Its figures and the
   * node's last_seen are queued. False: write it (begin() … remember()).
   */
  absorb(nodeId: string, body: ObservedState, digests = reportDigests(body)): boolean {
    const memo = this.#memos.get(nodeId);
    if (!memo || this.#closed) return false;
    const etag = this.#deps.documents.remembered(nodeId);
    if (etag === undefined || etag !== memo.etag || memo.epoch !== this.#deps.fanout.epoch || memo.says !== digests.says) return false;
    this.seen(nodeId);
    const now = Date.now();
    // A sample is due about once per interval; the statement itself skips a sliver sampled too
    // recently. Figures are written only with one.
    if (now - memo.sampledAt >= this.#deps.sampleSeconds * 900) {
      this.#queueFigures(nodeId, body);
      memo.sampledAt = now;
    }
    this.stats.absorbed++;
    return true;
  }

  /**
   * A call (a poll) from a node whose last report was written here: its last_seen is queued for
   * the next flush, which also brings it back should it have been marked offline meanwhile. False:
   * the node is not known here, and the caller writes last_seen itself.
   */
  seen(nodeId: string): boolean {
    const memo = this.#memos.get(nodeId);
    if (!memo || this.#closed) return false;
    const now = Date.now();
    if (now - memo.seenAt >= this.#deps.seenRefreshSeconds * 1000) {
      this.#seen.add(nodeId);
      memo.seenAt = now;
    }
    return true;
  }

  /** Queues the figures of a report's slivers for the next flush, with a sample due (a later
   * report's replace them). */
  #queueFigures(nodeId: string, body: ObservedState): void {
    for (const s of body.slivers) {
      const usage = s.state === 'deleted' ? null : usageOf(s);
      if (usage) this.#usage.set(s.id, { node: nodeId, id: s.id, usage });
    }
  }

  /** Before a report's statement: the ETag it is written against. */
  begin(nodeId: string): ReportTicket {
    const ticket: ReportTicket = { nodeId, etag: this.#deps.documents.remembered(nodeId), epoch: this.#deps.fanout.epoch, stale: false, sampledAt: this.#memos.get(nodeId)?.sampledAt ?? 0 };
    let set = this.#tickets.get(nodeId);
    if (!set) this.#tickets.set(nodeId, (set = new Set()));
    set.add(ticket);
    return ticket;
  }

  /** After the statement: remembers what it wrote (unless something moved meanwhile), and tells the
   * other replicas. sampled: the statement recorded usage samples. One that recorded none (a
   * sample was taken less than an interval ago) leaves the next sample due when it was: else a
   * report written just before a sample was due put the next one off by a whole interval. */
  remember(ticket: ReportTicket, body: ObservedState, digests = reportDigests(body), sampled = true): void {
    this.#wrote(ticket, body);
    if (this.#closed || ticket.stale || ticket.etag === undefined || ticket.epoch !== this.#deps.fanout.epoch) {
      this.#memos.delete(ticket.nodeId);
      return;
    }
    if (!this.#memos.has(ticket.nodeId) && this.#memos.size >= (this.#deps.max ?? 100_000)) this.#memos.delete(this.#memos.keys().next().value!);
    const now = Date.now();
    this.#memos.set(ticket.nodeId, { ...digests, etag: ticket.etag, epoch: ticket.epoch, seenAt: now, sampledAt: sampled ? now : ticket.sampledAt });
  }

  /** After a partial report's statement (written or not): nothing is remembered of the node, and
   * the other replicas forget it too. */
  wrotePartial(ticket: ReportTicket, body: ObservedState): void {
    this.#wrote(ticket, body);
    this.#memos.delete(ticket.nodeId);
  }

  /** A report's statement ran: its ticket ends, and the other replicas forget the node. */
  #wrote(ticket: ReportTicket, body: ObservedState): void {
    this.#end(ticket);
    // Queued figures of this node are older than what the statement just wrote.
    for (const s of body.slivers) if (this.#usage.get(s.id)?.node === ticket.nodeId) this.#usage.delete(s.id);
    void this.#deps.fanout.publish(REPORTS_CHANNEL, `${this.#id} ${ticket.nodeId}`).catch(() => undefined);
  }

  /** The statement failed: nothing is remembered. */
  abandon(ticket: ReportTicket): void {
    this.#end(ticket);
    this.#memos.delete(ticket.nodeId);
  }

  /** Another replica wrote a report of this node: what is remembered here may no longer be in the database. */
  forget(nodeId: string): void {
    this.#memos.delete(nodeId);
    for (const t of this.#tickets.get(nodeId) ?? []) t.stale = true;
  }

  /** Nodes remembered now (tests, metrics). */
  get size(): number {
    return this.#memos.size;
  }

  /** Writes what is queued: figures, then last_seen, FLUSH_BATCH rows per statement; a node found not online is brought back with its node.online event. */
  async flush(): Promise<void> {
    while (this.#flushing) await this.#flushing;
    if (!this.#seen.size && !this.#usage.size) return;
    const seen = [...this.#seen];
    const usage = [...this.#usage.values()];
    this.#seen = new Set();
    this.#usage = new Map();
    this.#flushing = (async () => {
      const { db, log } = this.#deps;
      this.stats.flushes++;
      // In batches: short statements keep PostgreSQL's turns short (250 rows cost a third as much a
      // row as 1,700 did, docs/benchmarks.md 2026-12-05).
      for (let i = 0; i < usage.length; i += FLUSH_BATCH) {
        const batch = usage.slice(i, i + FLUSH_BATCH);
        try {
          this.stats.samples += (await writeQueuedUsage(db, batch, this.#deps.sampleSeconds * 0.9)).sampled;
        } catch (err) {
          // Figures are totals: the next report's carry what these would have.
          log.warn({ err, slivers: batch.length }, 'writing queued usage figures failed');
        }
      }
      for (let i = 0; i < seen.length; i += FLUSH_BATCH) {
        const batch = seen.slice(i, i + FLUSH_BATCH);
        try {
          const { notOnline, skipped } = await touchNodesSeen(db, batch);
          this.stats.seenWritten += batch.length - notOnline.length - skipped.length;
          for (const id of skipped) this.#seen.add(id);
          for (const id of notOnline) await withChanges(this.#deps, (q, changes) => markSeen(q, changes, id));
        } catch (err) {
          log.warn({ err, nodes: batch.length }, 'writing last_seen of nodes failed; trying again next time');
          for (const id of batch) this.#seen.add(id);
        }
      }
    })();
    try {
      await this.#flushing;
    } finally {
      this.#flushing = null;
    }
  }

  /** Stops absorbing and writes what is queued (registry shutdown, before the database closes). */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#unsubscribe?.();
    this.#memos.clear();
    await this.flush();
  }

  #end(ticket: ReportTicket): void {
    const set = this.#tickets.get(ticket.nodeId);
    set?.delete(ticket);
    if (set && !set.size) this.#tickets.delete(ticket.nodeId);
  }
}
