// What every route and job of the registry shares: config, database, fan-out, logger.
import type { LimitFunction } from 'p-limit';
import type { Logger } from '@planetlite/core';
import type { Database, Lane } from '@planetlite/db';
import type { Fanout } from '@planetlite/fanout';
import type { RegistryConfig } from './config.js';
import type { Notifier } from './services/notify.js';
import type { ImageService } from './services/images.js';
import type { PrincipalCache } from './services/principals.js';
import type { DocumentCache } from './services/desired-state.js';
import type { ReportMemo } from './services/report-memo.js';

export interface RegistryContext {
  config: RegistryConfig;
  db: Database;
  /** The database for what nodes ask and send (polls, key lookups, reports): at most
   * nodeConnections(config) connections at once, so users' requests always find one. */
  nodeDb: Lane;
  fanout: Fanout;
  log: Logger;
  /** Who bearer secrets stand for, remembered per replica (forgotten on every replica when one ends). */
  principals: PrincipalCache;
  /** Nodes' desired-state documents, remembered per replica until a change touches the node. */
  documents: DocumentCache;
  /** What each node's last report said, so a report that says nothing new costs no statement of its own; null when documents are not remembered. */
  reports: ReportMemo | null;
  /** Where nodes' reports wait for their turn to be written (config.reportWrites at once): a
   * burst of reports queues here, not for the database pool that every API request needs. */
  reportWrites: LimitFunction;
  /** Tells slice members about events that concern them (watchdog resets). */
  notifier: Notifier;
  /** Image archives: their directory, the tracker that admits their torrents, the seeder. */
  images: ImageService;
  /** The CA that nodes and users pin (GET /ca.pem, enrollment tokens); null on plain HTTP or a public certificate. */
  trust: { ca: string | null; caPin: string | null };
  /** Told when the registry starts closing: long-polls and event streams end at once. */
  closing: Closing;
}

/**
 * The registry's close, told to the long-polls and event streams that wait on it. Thousands of
 * polls wait at once and come and go every second, so they are kept in a Set: an AbortSignal
 * walks its whole list of listeners on every add and remove (7 % of a replica's CPU at 2,500
 * agents, measured).
 */
export class Closing {
  readonly #waiting = new Set<() => void>();
  #closed = false;

  get closed(): boolean {
    return this.#closed;
  }

  /** Calls fn when the registry closes (at once if it has); the function returned forgets it. */
  onClose(fn: () => void): () => void {
    if (this.#closed) {
      fn();
      return () => undefined;
    }
    this.#waiting.add(fn);
    return () => this.#waiting.delete(fn);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const fn of this.#waiting) fn();
    this.#waiting.clear();
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    ctx: RegistryContext;
    /** Reads the TLS certificate again (a renewed one) without dropping open connections; no-op on plain HTTP. */
    reloadTls(): Promise<void>;
  }
}
