// Events the node records for the registry (watchdog.warning, watchdog.reset), sent in order.
// Kept in the state dir until the registry has them, so an outage or an agent restart loses none.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError, type NodeEventCreate, type PlanetLiteClient } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import { atomicWrite } from './state.js';

interface Pending extends NodeEventCreate {
  /** When the node saw it (the registry stamps its own time on arrival). */
  seen_at: string;
}

/** At most this many events wait; beyond it the oldest go (a node cut off for days). */
const MAX_PENDING = 1000;

export class EventOutbox {
  readonly #file: string;
  readonly #client: PlanetLiteClient;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #retryMs: number;
  #pending: Pending[];
  #flushing: Promise<void> | null = null;
  #retry: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(opts: { stateDir: string; client: PlanetLiteClient; nodeId: string; log: Logger; retryMs?: number }) {
    this.#file = join(opts.stateDir, 'outbox.json');
    this.#client = opts.client;
    this.#nodeId = opts.nodeId;
    this.#log = opts.log;
    this.#retryMs = opts.retryMs ?? 5000;
    this.#pending = existsSync(this.#file) ? (JSON.parse(readFileSync(this.#file, 'utf8')) as Pending[]) : [];
  }

  get size(): number {
    return this.#pending.length;
  }

  push(ev: NodeEventCreate): void {
    this.#pending.push({ ...ev, data: { ...(ev.data ?? {}) }, seen_at: new Date().toISOString() });
    if (this.#pending.length > MAX_PENDING) this.#pending.splice(0, this.#pending.length - MAX_PENDING);
    this.#save();
    void this.flush();
  }

  /** Sends what is pending, oldest first; stops at the first failure and retries later. */
  flush(): Promise<void> {
    this.#flushing ??= this.#send().finally(() => {
      this.#flushing = null;
    });
    return this.#flushing;
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    await this.#flushing;
  }

  async #send(): Promise<void> {
    while (this.#pending.length) {
      const ev = this.#pending[0]!;
      try {
        const { seen_at, ...body } = ev;
        await this.#client.postNodeEvent(this.#nodeId, { ...body, data: { ...(body.data ?? {}), seen_at } });
      } catch (err) {
        // A sliver the registry no longer knows (deleted meanwhile): the event has nowhere to go.
        if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 401 && err.status !== 429) {
          this.#log.warn({ type: ev.type, sliver: ev.sliver, err: err.message }, 'registry refused an event; dropped');
        } else {
          this.#log.debug({ err: err instanceof Error ? err.message : String(err), pending: this.#pending.length }, 'sending events failed; retrying');
          if (!this.#closed) {
            this.#retry = setTimeout(() => void this.flush(), this.#retryMs);
            this.#retry.unref();
          }
          return;
        }
      }
      this.#pending.shift();
      this.#save();
    }
  }

  #save(): void {
    atomicWrite(this.#file, JSON.stringify(this.#pending) + '\n', 0o600);
  }
}
