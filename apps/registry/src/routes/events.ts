// The event log: a filtered list, and the same objects live as Server-Sent Events.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { EventList, EventQuery, type Event } from '@planetlite/api';
import { requireUser, type UserPrincipal } from '../plugins/auth.js';
import { piSiteOf } from '../services/authz.js';
import { EVENTS_CHANNEL } from '../services/changes.js';
import { listEvents as queryEvents } from '../repositories/events.js';
import type { Queryable } from '@planetlite/db';
import { answers, bearer } from './common.js';
import { problemOf } from '../plugins/errors.js';

const HEARTBEAT_MS = 15_000;

/** The events this user may see (rules in repositories/events.ts). */
const listEvents = (db: Queryable, me: UserPrincipal, f: EventQuery & { id?: number }): Promise<Event[]> =>
  queryEvents(db, { admin: me.admin, piSite: piSiteOf(me), userId: me.id }, f);

export const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.get('/v1/events', {
    schema: { tags: ['events'], summary: 'Events the caller may see, oldest first; page with after=<last id>', security: bearer, querystring: EventQuery, response: answers({ 200: EventList }) },
  }, async (req) => ({ events: await listEvents(ctx.db, requireUser(req), req.query) }));

  app.get('/v1/events/stream', {
    schema: {
      tags: ['events'],
      summary: 'Server-Sent Events: first the backlog after `after` (or Last-Event-ID), then live events',
      security: bearer,
      querystring: Type.Omit(EventQuery, ['limit', 'newest']),
      produces: ['text/event-stream'],
      response: answers({}),
    },
  }, async (req, reply) => {
    const me = requireUser(req);
    const filter: EventQuery = { ...req.query };
    const lastId = Number(req.headers['last-event-id']);
    if (filter.after === undefined && Number.isSafeInteger(lastId) && lastId >= 0) filter.after = lastId;
    // The first page of the backlog is read before the 200 goes out, so that a filter the
    // database refuses is still a problem+json answer and not a stream that ends at once.
    let page = await listEvents(ctx.db, me, { ...filter, after: filter.after ?? 0, limit: 1000 });

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    const write = (text: string) => {
      if (!res.writableEnded && !res.destroyed) res.write(text);
    };
    let lastSent = filter.after ?? 0;
    const send = (e: Event) => {
      if (e.id <= lastSent) return;
      lastSent = e.id;
      write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
    };
    const matches = (e: Event) =>
      (!filter.slice || e.slice === filter.slice) && (!filter.node || e.node === filter.node) && (!filter.type || e.type === filter.type);

    // Live events queue up while the backlog is read, so none falls between the two.
    const queue: Event[] = [];
    let live = false;
    const onMessage = (msg: string) => {
      let e: Event;
      try {
        e = JSON.parse(msg) as Event;
      } catch {
        return;
      }
      if (!matches(e)) return;
      if (!live) return void queue.push(e);
      void deliver(e);
    };
    const deliver = async (e: Event) => {
      if (me.admin || !e.slice) return send(e);
      // Visibility needs the membership table; ask with the same query the list uses.
      const seen = await listEvents(ctx.db, me, { id: e.id, limit: 1 }).catch(() => []);
      if (seen[0]) send(seen[0]);
    };
    const unsubscribe = await ctx.fanout.subscribe(EVENTS_CHANNEL, onMessage);
    const heartbeat = setInterval(() => write(': keep-alive\n\n'), HEARTBEAT_MS);
    const close = () => {
      clearInterval(heartbeat);
      unsubscribe();
    };
    res.on('close', close);
    res.on('close', ctx.closing.onClose(() => res.end()));
    write(': connected\n\n');
    try {
      for (;;) {
        page.forEach(send);
        if (page.length < 1000) break;
        page = await listEvents(ctx.db, me, { ...filter, after: lastSent, limit: 1000 });
      }
      live = true;
      for (const e of queue.splice(0)) await deliver(e);
    } catch (err) {
      // The 200 is out: say why the stream ends in its own terms, then end it cleanly.
      req.log.warn({ err }, 'event stream backlog failed');
      write(`event: error\ndata: ${JSON.stringify(problemOf(500, 'internal_error', 'the event stream failed; reconnect with Last-Event-ID to resume'))}\n\n`);
      close();
      res.end();
    }
  });
};
