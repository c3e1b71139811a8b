// What every route and job of the registry shares: config, database, fan-out, logger.
import type { LimitFunction } from 'p-limit';
import type { Logger } from '@planetlite/core';
import type { Database } from '@planetlite/db';
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
  nodeDb: Database & { readonly waiting: number; readonly active: number };
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
  /** Aborted when the registry starts closing: long-polls and event streams end at once. */
  closing: AbortSignal;
}

declare module 'fastify' {
  interface FastifyInstance {
    ctx: RegistryContext;
    /** Reads the TLS certificate again (a renewed one) without dropping open connections; no-op on plain HTTP. */
    reloadTls(): Promise<void>;
  }
}
