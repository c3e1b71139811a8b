// Who a bearer secret stands for, remembered per replica so that a request costs no lookup in
// the database. Every write that ends or changes a secret (logout, a user's tokens revoked, a
// node's key revoked, rotated or replaced by enrollment) tells every replica through the fan-out
// after its commit, and the replica that made it forgets at once. It answers only once every
// replica the message reached has said it forgot too: Redis hands a message to one subscriber
// after another, and a replica whose copy came late once still answered a logged-out token on
// the next request. A replica that cannot hear the others (Redis down) remembers nothing and
// looks every secret up, as before the cache.
import { randomUUID } from 'node:crypto';
import type { Logger } from '@planetlite/core';
import type { Fanout } from '@planetlite/fanout';
import type { Principal } from './authz.js';

export const AUTH_CHANNEL = 'auth';
/** Where a replica says it forgot what a message on AUTH_CHANNEL named (the message's id). */
export const AUTH_DONE_CHANNEL = 'auth.done';

/** What a write ended: one token, every token of a user, or every key of a node. */
export type Forget = { token: string } | { user: string } | { node: string };

interface Entry {
  principal: Principal;
  /** ms since the epoch: the secret's own expiry, or the cache's bound, whichever is first. */
  until: number;
}

export interface PrincipalCacheOptions {
  fanout: Fanout;
  log: Logger;
  /** The longest an answer is kept (a bound for a message from another replica that was lost); each is kept between half of it and all of it. */
  ttlMs?: number;
  /** Entries kept at most; the oldest go first. */
  max?: number;
  /** How long forget() waits for the other replicas to say they forgot. */
  confirmMs?: number;
}

/** A forget this replica sent, waiting for the replicas it reached to confirm it. */
interface Sent {
  /** Confirmations heard. */
  heard: number;
  /** Confirmations to wait for: the replicas the message reached (this one among them). */
  reached: number;
  done: () => void;
}

export class PrincipalCache {
  readonly #entries = new Map<string, Entry>();
  readonly #fanout: Fanout;
  readonly #log: Logger;
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #confirmMs: number;
  readonly #sent = new Map<string, Sent>();
  /** Bumped by every forget: a lookup that began before one may have read what it ended. */
  #generation = 0;
  /** Listening to the other replicas; nothing is kept before that, or while the fan-out is down. */
  #listening = false;
  /** The fan-out's connection the entries were kept under: a reconnect may have lost forgets. */
  #epoch = 0;
  #unsubscribe: (() => void) | null = null;

  constructor(opts: PrincipalCacheOptions) {
    this.#fanout = opts.fanout;
    this.#log = opts.log;
    this.#ttlMs = opts.ttlMs ?? 30_000;
    this.#max = opts.max ?? 50_000;
    this.#confirmMs = opts.confirmMs ?? 2_000;
  }

  /** Starts hearing the other replicas' forgets and their confirmations of this one's. */
  async start(): Promise<void> {
    // Confirmations first: a forget sent once AUTH_CHANNEL is heard must hear them.
    const unheard = await this.#fanout.subscribe(AUTH_DONE_CHANNEL, (id) => {
      const sent = this.#sent.get(id);
      if (sent && ++sent.heard >= sent.reached) sent.done();
    });
    const unforget = await this.#fanout.subscribe(AUTH_CHANNEL, (message) => {
      let what: (Forget & { id?: string }) | null = null;
      try {
        what = JSON.parse(message) as Forget & { id?: string };
      } catch {
        // garbage: forget everything
      }
      this.#drop(what);
      if (typeof what?.id === 'string') {
        this.#fanout.publish(AUTH_DONE_CHANNEL, what.id).catch((err: unknown) => this.#log.warn({ err }, 'confirming a forgotten secret to the other replicas failed'));
      }
    });
    this.#unsubscribe = () => (unforget(), unheard());
    // With no time to keep answers (PLANETLITE_AUTH_CACHE_SECONDS=0) it only hears confirmations.
    this.#listening = this.#ttlMs > 0;
  }

  stop(): void {
    this.#listening = false;
    this.#unsubscribe?.();
    this.#entries.clear();
    for (const sent of this.#sent.values()) sent.done();
  }

  /** The principal of a secret's hash: remembered, or load()ed and remembered until `until`
   * (null: the cache's bound) unless `keep` is false. */
  async lookup(hash: string, load: () => Promise<{ principal: Principal; until: number | null; keep?: boolean } | null>): Promise<Principal | null> {
    const usable = this.#listening && this.#fanout.healthy;
    if (!usable || this.#epoch !== this.#fanout.epoch) {
      // A message missed while the fan-out was down could have ended any of them.
      this.#entries.clear();
      this.#epoch = this.#fanout.epoch;
    }
    if (usable) {
      const hit = this.#entries.get(hash);
      if (hit && hit.until > Date.now()) return hit.principal;
      if (hit) this.#entries.delete(hash);
    }
    const generation = this.#generation;
    const found = await load();
    if (found && found.keep !== false && usable && generation === this.#generation && this.#fanout.healthy && this.#epoch === this.#fanout.epoch) {
      if (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!);
      // Each entry's bound is drawn from the second half of ttlMs: secrets looked up together (a
      // fleet of nodes after a restart) would otherwise expire together and be looked up together
      // again, every ttlMs, for good (300-500 lookups queued for connections at once at 5,000 nodes).
      const bound = Date.now() + this.#ttlMs * (0.5 + Math.random() / 2);
      this.#entries.set(hash, { principal: found.principal, until: found.until === null ? bound : Math.min(found.until, bound) });
    }
    return found?.principal ?? null;
  }

  /** Forgets here at once and tells the other replicas; resolves once every replica listening
   * has forgotten it too (at most confirmMs later). Call after the write's commit. */
  async forget(what: Forget): Promise<void> {
    this.#drop(what);
    const id = randomUUID();
    let done!: () => void;
    const confirmed = new Promise<void>((resolve) => (done = resolve));
    // Registered before the publish: the in-process fan-out confirms before publish() returns.
    const sent: Sent = { heard: 0, reached: Number.POSITIVE_INFINITY, done };
    this.#sent.set(id, sent);
    let timer: NodeJS.Timeout | undefined;
    try {
      sent.reached = await this.#fanout.publish(AUTH_CHANNEL, JSON.stringify({ ...what, id }));
      if (sent.heard >= sent.reached) return;
      const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), this.#confirmMs)));
      if ((await Promise.race([confirmed, late])) === 'late') {
        // A stalled replica forgets when it reads the message; until then it may still answer.
        this.#log.warn({ replicas: sent.reached, confirmed: sent.heard, waitedMs: this.#confirmMs }, 'not every replica confirmed forgetting an ended secret in time');
      }
    } catch (err) {
      // The others' fan-out is then down too, or soon: they keep nothing while it is.
      this.#log.warn({ err }, 'telling the other replicas that a secret ended failed');
    } finally {
      clearTimeout(timer);
      this.#sent.delete(id);
    }
  }

  /** Entries held now (tests, metrics). */
  get size(): number {
    return this.#entries.size;
  }

  #drop(what: Forget | null): void {
    this.#generation++;
    if (what === null) {
      this.#entries.clear();
      return;
    }
    for (const [hash, e] of this.#entries) {
      const p = e.principal;
      if (
        ('token' in what && hash === what.token) ||
        ('user' in what && p.kind === 'user' && p.id === what.user) ||
        ('node' in what && p.kind === 'node' && p.id === what.node)
      ) {
        this.#entries.delete(hash);
      }
    }
  }
}
