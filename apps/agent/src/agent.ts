// The node agent daemon: desired-state sync in, observed state out. Each module has start/stop,
// stopped in reverse order.
import { PlanetLiteClient, type DesiredState, type ObservedState } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import { StateDir } from './state.js';
import { DesiredStateSync } from './sync.js';

export interface AgentOptions {
  stateDir: string;
  log: Logger;
  /** Long-poll length, seconds (tests shorten it). */
  waitSeconds?: number;
  /** How often observed state is sent even when nothing changed, ms (default 30 s). */
  reportEveryMs?: number;
}

export class Agent {
  readonly state: StateDir;
  readonly sync: DesiredStateSync;
  readonly client: PlanetLiteClient;
  readonly nodeId: string;
  readonly #log: Logger;
  readonly #reportEveryMs: number;
  #timer: NodeJS.Timeout | null = null;
  #reporting: Promise<void> = Promise.resolve();

  constructor(opts: AgentOptions) {
    this.state = new StateDir(opts.stateDir);
    const e = this.state.readEnrollment();
    this.nodeId = e.node_id;
    this.#log = opts.log;
    this.#reportEveryMs = opts.reportEveryMs ?? 30_000;
    this.client = new PlanetLiteClient({ registry: e.registry, token: e.node_key });
    this.sync = new DesiredStateSync({
      client: this.client,
      nodeId: e.node_id,
      state: this.state,
      log: opts.log.child({ component: 'sync' }),
      onDesired: (doc) => this.#apply(doc),
      ...(opts.waitSeconds !== undefined ? { waitSeconds: opts.waitSeconds } : {}),
    });
  }

  async start(): Promise<void> {
    await this.sync.start();
    this.#timer = setInterval(() => void this.report(), this.#reportEveryMs);
    await this.report();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.sync.stop();
    await this.#reporting;
  }

  /** What this node actually has. Empty until the instance drivers land: nothing is claimed that is not there. */
  observed(): ObservedState {
    return { slivers: [] };
  }

  /** Sends observed state; failures are logged and retried on the next tick. */
  report(): Promise<void> {
    this.#reporting = this.#reporting.then(async () => {
      try {
        await this.client.putObservedState(this.nodeId, this.observed());
      } catch (err) {
        this.#log.debug({ err: err instanceof Error ? err.message : String(err) }, 'observed-state report failed');
      }
    });
    return this.#reporting;
  }

  async #apply(doc: DesiredState): Promise<void> {
    this.#log.info({ slivers: doc.slivers.length }, 'desired state received');
    await this.report();
  }
}
