// The desired state of a node: the document its agent long-polls, and the ETag that names it.
import { createHash } from 'node:crypto';
import { AppError } from '@planetlite/core';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import type { Lane, Queryable } from '@planetlite/db';
import type { Fanout } from '@planetlite/fanout';
import { nodeChannel } from './changes.js';
import { desiredStateRows } from '../repositories/slivers.js';
import { webSeedOf } from '../repositories/images.js';

export interface DesiredStateDeps {
  db: Queryable;
  /** Read on every call: a registry listening on port 0 learns its public URL after start. */
  config: { publicUrl: string };
}

/** The same deps, with their statement in the lane's queue `at` (nodes' reads go through a Lane;
 * any other Queryable has one queue). */
function inQueue(deps: DesiredStateDeps, at: 'ahead' | 'behind'): DesiredStateDeps {
  const queue = (deps.db as Partial<Lane>)[at];
  return queue ? { db: queue, config: deps.config } : deps;
}

/** The document and whether the node's key is revoked, from one statement. */
export async function readDesiredState(deps: DesiredStateDeps, nodeId: string): Promise<{ doc: DesiredState; revoked: boolean }> {
  const { db, config } = deps;
  const rows = await desiredStateRows(db, nodeId);
  if (!rows) throw new AppError('not_found', `node ${nodeId} not found`);
  const slivers: DesiredSliver[] = rows.slivers.map((r) => ({
    id: r.id,
    slice: r.slice,
    kind: r.kind,
    desired: r.desired,
    restart_seq: r.restart_seq,
    reset_seq: r.reset_seq,
    thaw_seq: r.thaw_seq,
    image: { name: r.image, sha256: r.sha256, magnet: r.magnet, web_seed: r.sha256 ? webSeedOf(config.publicUrl, r.image) : null },
    resources: r.resources,
    memory_reset: r.memory_reset,
    ports: r.ports,
    expires_at: r.expires_at,
    keys: r.keys,
  }));
  return { doc: { node_id: nodeId, address: rows.address, port_window: rows.port_window, slivers }, revoked: rows.revoked };
}

export async function desiredStateOf(deps: DesiredStateDeps, nodeId: string): Promise<DesiredState> {
  return (await readDesiredState(deps, nodeId)).doc;
}

export const etagOf = (doc: DesiredState): string => etagOfBody(JSON.stringify(doc));
const etagOfBody = (body: string): string => `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;

/** A node's document as a poll answers it. */
export interface NodeDocument {
  /** null only when its ETag is the one the caller holds (DocumentCache.get's `unless`). */
  doc: DesiredState | null;
  /** The document as JSON, serialised once for its ETag and its answer (a node of 2,000 slivers
   * has a 1.5 MB document: serialising it again per answer cost as much as reading it). */
  body: string | null;
  etag: string;
  revoked: boolean;
}

interface CachedDocument {
  /** What a poll compares; the document itself is not kept (a node holding another ETag gets it read anew). */
  etag: string;
  revoked: boolean;
  /** Ends its hold on the node's fan-out channel. */
  release: () => void;
  timer: NodeJS.Timeout;
  /** A poll was answered from it since its last check. */
  used: boolean;
  /** Its bound passed and it is being read again: polls read it themselves meanwhile. */
  checking: boolean;
}

export interface DocumentCacheOptions {
  fanout: Fanout;
  /** The longest a document is answered from memory unchecked (a bound for a write that touched no node); 0: never. */
  ttlMs: number;
  /** Documents kept at most; the oldest go first. */
  max?: number;
}

/**
 * The desired-state documents of the nodes polling this replica, kept until their node's fan-out
 * channel carries a message (every write that changes a document touches its node after the
 * commit), the fan-out is down or reconnects (messages may have been lost), or ttlMs passes
 * (then it is read again, and kept if it is the same and polls still use it). An idle poll cycle then costs no statement for its document: before, each built it twice. Only
 * the ETag is kept: a poll that holds it is answered 304, any other has the document read.
 */
export class DocumentCache {
  readonly #entries = new Map<string, CachedDocument>();
  readonly #fanout: Fanout;
  readonly #ttlMs: number;
  readonly #max: number;
  #epoch = 0;
  #closed = false;

  constructor(opts: DocumentCacheOptions) {
    this.#fanout = opts.fanout;
    this.#ttlMs = opts.ttlMs;
    this.#max = opts.max ?? 100_000;
  }

  /** The node's document, read now unless its remembered ETag is `unless` (then doc is null);
   * `fresh` (a change woke the caller) reads it whatever is remembered, ahead of the lane's queue. */
  async get(deps: DesiredStateDeps, nodeId: string, opts: { fresh?: boolean; unless?: string | undefined } = {}): Promise<NodeDocument> {
    const usable = this.#usable();
    if (!usable || this.#epoch !== this.#fanout.epoch) {
      this.clear();
      this.#epoch = this.#fanout.epoch;
    }
    const hit = this.#entries.get(nodeId);
    if (hit && usable && !opts.fresh && !hit.checking && hit.etag === opts.unless) {
      hit.used = true;
      return { doc: null, body: null, etag: hit.etag, revoked: hit.revoked };
    }
    if (hit) this.#drop(nodeId);
    const read = async () => {
      // A read after a change is what the change's latency waits on: it passes the nodes' reports
      // and lookups waiting for their turn (hundreds at a time on a busy replica).
      const { doc, revoked } = await readDesiredState(opts.fresh ? inQueue(deps, 'ahead') : deps, nodeId);
      const body = JSON.stringify(doc);
      return { doc, body, etag: etagOfBody(body), revoked };
    };
    if (!usable) return read();
    // Listen first: a change that lands while the document is read leaves it unkept. A message
    // can come before subscribe() returns (the channel is already subscribed for the node's poll).
    let changed = false;
    let release: (() => void) | null = null;
    release = await this.#fanout.subscribe(nodeChannel(nodeId), () => {
      changed = true;
      if (release && this.#entries.get(nodeId)?.release === release) this.#drop(nodeId);
    });
    const epoch = this.#fanout.epoch;
    let value: NodeDocument;
    try {
      value = await read();
    } catch (err) {
      release();
      throw err;
    }
    if (changed || !this.#usable() || epoch !== this.#fanout.epoch || epoch !== this.#epoch || this.#entries.has(nodeId)) {
      release();
      return value;
    }
    if (this.#entries.size >= this.#max) this.#drop(this.#entries.keys().next().value!);
    const entry: CachedDocument = { etag: value.etag, revoked: value.revoked, release, timer: setTimeout(() => undefined, 0), used: false, checking: false };
    this.#arm(deps, nodeId, entry);
    this.#entries.set(nodeId, entry);
    return value;
  }

  /**
   * At its bound, a document polls still use is read again, still subscribed (a change meanwhile
   * drops it), and kept when it is the same; one no poll used, or that changed, is dropped. So the
   * ETag of a node that keeps polling stays known without a gap (ReportMemo relies on it).
   */
  #arm(deps: DesiredStateDeps, nodeId: string, entry: CachedDocument): void {
    // Each check comes in the last quarter of the bound, drawn per document: documents read
    // together (a fleet's after a restart) are read again spread out, not all at once every bound.
    entry.timer = setTimeout(() => {
      if (this.#entries.get(nodeId) !== entry) return;
      if (!entry.used || !this.#usable()) return this.#drop(nodeId);
      entry.used = false;
      entry.checking = true;
      // Nobody waits on a check: it lets the nodes' other statements go first.
      readDesiredState(inQueue(deps, 'behind'), nodeId).then(
        ({ doc, revoked }) => {
          if (this.#entries.get(nodeId) !== entry) return;
          if (etagOf(doc) !== entry.etag || revoked !== entry.revoked) return this.#drop(nodeId);
          entry.checking = false;
          this.#arm(deps, nodeId, entry);
        },
        () => this.#entries.get(nodeId) === entry && this.#drop(nodeId),
      );
    }, this.#ttlMs * (0.75 + Math.random() / 4));
    entry.timer.unref();
  }

  /** The ETag this replica remembers for the node now, while it can be trusted (undefined: none). */
  remembered(nodeId: string): string | undefined {
    if (!this.#usable() || this.#epoch !== this.#fanout.epoch) return undefined;
    return this.#entries.get(nodeId)?.etag;
  }

  /** Documents held now (tests, metrics). */
  get size(): number {
    return this.#entries.size;
  }

  clear(): void {
    for (const id of [...this.#entries.keys()]) this.#drop(id);
  }

  close(): void {
    this.#closed = true;
    this.clear();
  }

  #usable(): boolean {
    return !this.#closed && this.#ttlMs > 0 && this.#fanout.healthy;
  }

  #drop(nodeId: string): void {
    const e = this.#entries.get(nodeId);
    if (!e) return;
    this.#entries.delete(nodeId);
    clearTimeout(e.timer);
    e.release();
  }
}
