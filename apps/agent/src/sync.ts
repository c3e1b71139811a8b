// Desired-state sync: long-polls the registry (ETag + ?wait) so a change arrives in well under
// a second, pulls the whole document on a schedule as a safety net, keeps the last good document
// on disk, and keeps going (with backoff) while the registry is unreachable.
import cron from 'node-cron';
import { ApiError, PlanetLiteClient, tlsVerifyCodeOf, type DesiredState } from '@planetlite/api';
import { spreadOf, type Logger } from '@planetlite/core';
import type { StateDir } from './state.js';

export interface SyncOptions {
  client: PlanetLiteClient;
  nodeId: string;
  state: StateDir;
  log: Logger;
  /** Called with every new document (and once at start with the cached one, if any). */
  onDesired: (doc: DesiredState) => void | Promise<void>;
  /** Long-poll length asked of the registry, seconds (default 50). */
  waitSeconds?: number;
  /** Cron expression of the full pull (default every 5 minutes, at this node's own second of them: fullPullCronOf). */
  fullPullCron?: string;
  /** Backoff after failures, ms: first and maximum (default 500 and 30 000). */
  backoffMs?: [number, number];
  /** The registry revoked this node's key (decommissioned, or revoked by its site): called once. */
  onRevoked?: () => void | Promise<void>;
}

/**
 * The full pull's schedule: every 5 minutes, at the second of the 5 minutes that the node's id
 * gives it. At second 0 of every fifth minute (the schedule before), a fleet's agents, their
 * clocks in step by NTP, all pulled their whole documents in the same second: at 10,000 nodes,
 * 10,000 requests at once every 5 minutes for the registry.
 */
export function fullPullCronOf(nodeId: string): string {
  const at = Math.floor(spreadOf(nodeId) * 300);
  return `${at % 60} ${Math.floor(at / 60)}-59/5 * * * *`;
}

export class DesiredStateSync {
  readonly #o: Required<Omit<SyncOptions, 'fullPullCron' | 'onRevoked'>> & Pick<SyncOptions, 'onRevoked'> & { fullPullCron: string };
  #etag: string | null = null;
  #abort = new AbortController();
  #loop: Promise<void> | null = null;
  #cron: { stop(): unknown } | null = null;
  #reachable = true;
  /** The last failure was a certificate the pinned CA did not sign (logged once until it changes). */
  #refusedTls = false;
  /** The registry said this node's key is revoked (acted on once). */
  #revoked = false;
  /** The document the agent works from: the newest one it fetched or found on disk. */
  current: DesiredState | null = null;

  constructor(opts: SyncOptions) {
    this.#o = { waitSeconds: 50, fullPullCron: fullPullCronOf(opts.nodeId), backoffMs: [500, 30_000], ...opts };
  }

  get reachable(): boolean {
    return this.#reachable;
  }

  async start(): Promise<void> {
    const cached = this.#o.state.readDesired();
    if (cached && cached.state.node_id === this.#o.nodeId) {
      // Slivers keep running from the cached document while the registry is away.
      this.#etag = cached.etag;
      this.current = cached.state;
      this.#o.log.info({ fetched_at: cached.fetched_at, slivers: cached.state.slivers.length }, 'working from the cached desired state');
      await this.#deliver(cached.state);
    }
    this.#loop = this.#run();
    this.#cron = cron.schedule(this.#o.fullPullCron, () => void this.pullNow(), { noOverlap: true, name: 'desired-state-full-pull' });
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#cron?.stop();
    await this.#loop;
  }

  /** A full pull that ignores the ETag (the scheduled safety net; also callable). */
  async pullNow(): Promise<void> {
    try {
      const res = await this.#o.client.desiredState(this.#o.nodeId, { signal: this.#abort.signal });
      if (!this.#reachable) this.#o.log.info('registry reachable again (scheduled pull)');
      this.#reachable = true;
      if (res.state) await this.#accept(res.state, res.etag, res.text);
    } catch (err) {
      if (!this.#abort.signal.aborted) this.#o.log.warn({ err: String(err) }, 'scheduled desired-state pull failed');
    }
  }

  async #run(): Promise<void> {
    const backoff = new Backoff(...this.#o.backoffMs);
    while (!this.#abort.signal.aborted) {
      this.#pickUpKey();
      try {
        const res = await this.#o.client.desiredState(this.#o.nodeId, { etag: this.#etag, wait: this.#o.waitSeconds, signal: this.#abort.signal });
        if (!this.#reachable) this.#o.log.info('registry reachable again');
        this.#reachable = true;
        this.#refusedTls = false;
        backoff.succeeded();
        if (res.state) await this.#accept(res.state, res.etag, res.text);
      } catch (err) {
        if (this.#abort.signal.aborted) break;
        // A key rotated meanwhile (planetlite-agent rotate-key) is in the enrollment file: retry with it at once.
        if (err instanceof ApiError && err.status === 401 && this.#pickUpKey()) continue;
        if (err instanceof ApiError && err.code === 'node_key_revoked') {
          if (!this.#revoked) {
            this.#revoked = true;
            this.#o.log.error({ code: err.code, detail: err.message }, 'the registry revoked this node key (decommissioned, or revoked by its site): enroll the node again');
            await this.#o.onRevoked?.();
          }
        } else if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          this.#o.log.error({ code: err.code, detail: err.message }, 'the registry refuses this node key: enroll the node again');
        } else if (tlsVerifyCodeOf(err)) {
          // Another server at the registry's address: nothing is sent to it, slivers keep running.
          if (!this.#refusedTls) this.#o.log.error({ code: tlsVerifyCodeOf(err), registry: this.#o.client.registry }, 'the registry presents a certificate its pinned CA did not sign: refusing it');
        } else if (this.#reachable) {
          this.#o.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'registry unreachable; keeping slivers as they are');
        }
        this.#reachable = false;
        this.#refusedTls = tlsVerifyCodeOf(err) !== null;
        await sleep(backoff.failed(), this.#abort.signal);
      }
    }
  }

  /**
   * Uses the key in the enrollment file if it changed (rotation); the client is the agent's one, so
   * reports and uploads switch too. true when it switched.
   */
  #pickUpKey(): boolean {
    let key: string;
    try {
      key = this.#o.state.readEnrollment().node_key;
    } catch {
      return false;
    }
    if (key === this.#o.client.token) return false;
    this.#o.client.token = key;
    this.#o.log.info('switched to the node key in the enrollment file (rotated)');
    return true;
  }

  async #accept(doc: DesiredState, etag: string | null, text?: string): Promise<void> {
    this.#etag = etag;
    this.current = doc;
    // Handed on first, kept on disk right after: the pass has started its first host commands by
    // then, and the copy (the whole document serialised and written, 1.5 MB at 2,000 slivers) no
    // longer delays every change. A crash in between leaves the previous copy, and no sliver of
    // this document built yet; the next start takes the registry's document as ever.
    const delivered = this.#deliver(doc);
    this.#o.state.writeDesired({ etag, fetched_at: new Date().toISOString(), state: doc }, text);
    await delivered;
  }

  async #deliver(doc: DesiredState): Promise<void> {
    try {
      await this.#o.onDesired(doc);
    } catch (err) {
      this.#o.log.error({ err }, 'applying the desired state failed; the next change or pull tries again');
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
}

/**
 * The wait after failed calls to the registry: first, doubling to max. Each wait is jittered (half
 * to all of it): after a registry outage, thousands of nodes must not come back in the same
 * instant, wave after wave. The fleet benchmark's simulated agents use it too.
 */
export class Backoff {
  #next: number;
  constructor(
    readonly first = 500,
    readonly max = 30_000,
  ) {
    this.#next = first;
  }

  /** Milliseconds to wait after one more failure. */
  failed(): number {
    const ms = this.#next * (0.5 + Math.random() / 2);
    this.#next = Math.min(this.max, this.#next * 2);
    return ms;
  }

  succeeded(): void {
    this.#next = this.first;
  }
}
