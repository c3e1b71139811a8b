// Events and change notifications. Writes collect them in a Changes object inside their
// transaction; publish() sends them to the fan-out only after the commit, so no replica or node
// is woken for a change it cannot yet read.
import type { Event } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import type { Database, Queryable } from '@planetlite/db';
import type { Fanout } from '@planetlite/fanout';
import { insertEvent, insertEvents, type NewEvent } from '../repositories/events.js';
import type { Forget, PrincipalCache } from './principals.js';

export const EVENTS_CHANNEL = 'events';
export const nodeChannel = (nodeId: string) => `node:${nodeId}`;

/** What a write that records changes needs. */
export interface ChangeDeps {
  db: Database;
  fanout: Fanout;
  log: Logger;
  /** Who secrets stand for, per replica: a write that ends a secret makes every replica forget it. */
  principals: PrincipalCache;
}

export class Changes {
  readonly events: Event[] = [];
  readonly nodes = new Set<string>();
  readonly #forget: Forget[] = [];
  readonly #nodesAfter: Array<(q: Queryable) => Promise<string[]>> = [];

  async record(q: Queryable, e: NewEvent): Promise<Event> {
    const ev = await insertEvent(q, e);
    this.events.push(ev);
    return ev;
  }

  async recordMany(q: Queryable, es: NewEvent[]): Promise<Event[]> {
    const evs = await insertEvents(q, es);
    this.events.push(...evs);
    return evs;
  }

  /** Events a statement wrote itself, beside the rows it changed: published with the others. */
  recorded(...evs: Event[]): void {
    this.events.push(...evs);
  }

  /** The desired state of these nodes changed: wake their long-polls. */
  touch(...nodeIds: Array<string | null | undefined>): void {
    for (const id of nodeIds) if (id) this.nodes.add(id);
  }

  /** Nodes to wake that are read after the commit: a write in the same rows that commits while
   * this one runs (a sliver made in a slice whose member's keys change) is then among them, or
   * it commits after this one and wakes its node with this change visible. */
  touchAfterCommit(read: (q: Queryable) => Promise<string[]>): void {
    this.#nodesAfter.push(read);
  }

  /** Reads the nodes touchAfterCommit() asked for; called once the write has committed. */
  async settle(deps: Pick<ChangeDeps, 'db' | 'log'>): Promise<void> {
    for (const read of this.#nodesAfter) {
      try {
        this.touch(...(await read(deps.db)));
      } catch (err) {
        deps.log.warn({ err }, 'reading the nodes a change concerns failed; they catch up on their next pull');
      }
    }
  }

  /** A secret this write ends or changes (a node's key revoked, rotated, replaced): no replica may
   * keep answering for it from memory once the write commits. */
  forget(what: Forget): void {
    this.#forget.push(what);
  }

  async publish(deps: Pick<ChangeDeps, 'fanout' | 'log' | 'principals'>): Promise<void> {
    // Before anything else: the replica that wrote must not answer from memory a moment longer.
    const sends: Promise<unknown>[] = this.#forget.map((what) => deps.principals.forget(what));
    for (const id of this.nodes) sends.push(deps.fanout.publish(nodeChannel(id), 'changed'));
    for (const ev of this.events) sends.push(deps.fanout.publish(EVENTS_CHANNEL, JSON.stringify(ev)));
    const results = await Promise.allSettled(sends);
    for (const r of results) if (r.status === 'rejected') deps.log.warn({ err: r.reason }, 'fan-out publish failed; nodes catch up on their next pull');
  }
}

/** Publishes the events a write of one statement (no transaction) recorded, and wakes the nodes
 * whose desired state it changed, once it is done. */
export async function publishChange(deps: Pick<ChangeDeps, 'fanout' | 'log' | 'principals'>, events: Event[], nodes: string[] = []): Promise<void> {
  const changes = new Changes();
  changes.recorded(...events);
  changes.touch(...nodes);
  await changes.publish(deps);
}

/** Runs fn in a transaction with a fresh Changes, then publishes what it recorded. */
export async function withChanges<T>(deps: ChangeDeps, fn: (q: Queryable, changes: Changes) => Promise<T>): Promise<T> {
  const changes = new Changes();
  const out = await deps.db.transaction((q) => fn(q, changes));
  await changes.settle(deps);
  await changes.publish(deps);
  return out;
}
