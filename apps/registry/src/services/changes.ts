// Events and change notifications. Writes collect them in a Changes object inside their
// transaction; publish() sends them to the fan-out only after the commit, so no replica or node
// is woken for a change it cannot yet read.
import type { Event } from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import type { RegistryContext } from '../context.js';
import { toEvent, type Row } from './mappers.js';

export const EVENTS_CHANNEL = 'events';
export const nodeChannel = (nodeId: string) => `node:${nodeId}`;

export class Changes {
  readonly events: Event[] = [];
  readonly nodes = new Set<string>();

  async record(
    q: Queryable,
    e: { type: string; slice?: string | null; node?: string | null; sliver?: string | null; data?: Record<string, unknown> },
  ): Promise<Event> {
    const { rows } = await q.query<Row>(
      'INSERT INTO events (type, slice, node, sliver, data) VALUES ($1, $2, $3, $4, $5) RETURNING *',
      [e.type, e.slice ?? null, e.node ?? null, e.sliver ?? null, JSON.stringify(e.data ?? {})],
    );
    const ev = toEvent(rows[0]!);
    this.events.push(ev);
    return ev;
  }

  /** The desired state of these nodes changed: wake their long-polls. */
  touch(...nodeIds: Array<string | null | undefined>): void {
    for (const id of nodeIds) if (id) this.nodes.add(id);
  }

  async publish(ctx: RegistryContext): Promise<void> {
    const sends: Promise<void>[] = [];
    for (const id of this.nodes) sends.push(ctx.fanout.publish(nodeChannel(id), 'changed'));
    for (const ev of this.events) sends.push(ctx.fanout.publish(EVENTS_CHANNEL, JSON.stringify(ev)));
    const results = await Promise.allSettled(sends);
    for (const r of results) if (r.status === 'rejected') ctx.log.warn({ err: r.reason }, 'fan-out publish failed; nodes catch up on their next pull');
  }
}

/** Runs fn in a transaction with a fresh Changes, then publishes what it recorded. */
export async function withChanges<T>(ctx: RegistryContext, fn: (q: Queryable, changes: Changes) => Promise<T>): Promise<T> {
  const changes = new Changes();
  const out = await ctx.db.transaction((q) => fn(q, changes));
  await changes.publish(ctx);
  return out;
}
