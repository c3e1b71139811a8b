// What node agents call: their desired state (ETag + long-poll), their observed state, their events,
// their slivers' console logs.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError, spreadOf } from '@planetlite/core';
import {
  DesiredState,
  DesiredStateQuery,
  Event,
  NodeEventCreate,
  ObservedState,
  SLIVER_CONSOLE_MAX_BYTES,
  SliverConsoleReceipt,
  NodeKey,
} from '@planetlite/api';
import { requireNode } from '../plugins/auth.js';
import type { RegistryContext } from '../context.js';
import { nodeChannel, withChanges } from '../services/changes.js';
import { desiredStateOf, etagOf, type NodeDocument } from '../services/desired-state.js';
import { acceptReport, ReportDropped, seenRefreshSecondsOf } from '../services/node-reports.js';
import { sendProblem } from '../plugins/errors.js';
import { RETRY_AFTER_SECONDS } from '../plugins/unavailable.js';
import { sliceOfSliverOn } from '../repositories/slivers.js';
import { storeConsole } from '../repositories/console.js';
import { touchNodeSeen } from '../repositories/nodes.js';
import { markSeen, rotateNodeKey } from '../services/node-lifecycle.js';
import { answers, bearer, IdParams } from './common.js';

const ConsoleParams = Type.Object({ id: Type.String({ format: 'uuid' }), sliver_id: Type.String({ format: 'uuid' }) });

/** How often a long-poll looks at the database itself while the fan-out (Redis) is down. */
const FALLBACK_POLL_MS = 1_000;
const FALLBACK_AFTER_MS = 5_000;

/**
 * While Redis is down its messages are lost: the held polls look at their desired state every
 * second instead, and for a few seconds after it is back (until the resubscriptions have surely
 * landed). One timer for the replica, ticking past a Set: a timer per held poll was 5,000 timers
 * a replica at 10,000 agents, each called every second to find Redis up.
 */
class FallbackPolls {
  readonly #held = new Set<{ nodeId: string; known: string; wake: () => void }>();
  readonly #timer: NodeJS.Timeout;
  #downAt = 0;

  constructor(ctx: RegistryContext) {
    this.#timer = setInterval(() => {
      if (!ctx.fanout.healthy) this.#downAt = Date.now();
      else if (Date.now() - this.#downAt > FALLBACK_AFTER_MS) return;
      for (const p of this.#held) {
        desiredStateOf(ctx, p.nodeId).then((d) => etagOf(d) !== p.known && p.wake(), () => undefined);
      }
    }, FALLBACK_POLL_MS);
    this.#timer.unref();
  }

  /** Wakes the poll when its document no longer has the ETag `known`; the function returned forgets it. */
  hold(nodeId: string, known: string, wake: () => void): () => void {
    const p = { nodeId, known, wake };
    this.#held.add(p);
    return () => this.#held.delete(p);
  }

  close(): void {
    clearInterval(this.#timer);
    this.#held.clear();
  }
}

/**
 * How long a long-poll of `nodeId` with nothing to say is held, at `now`: until the node's own
 * moment of the ?wait=S cycle (`spreadOf` its id: the nodes' moments spread over the S seconds), so
 * at most S, and about S from poll to poll once a node is on its moment. Polls that came together
 * (a fleet's reconnect after a replica died, a stopped event loop letting its timers go at once)
 * end at their nodes' moments, spread over S, after one poll: a hold drawn per poll from the
 * last tenth of S left them in step for minutes (at 10,000 nodes, 612-1,362 polls a replica per
 * 5 s, 150 s after the reconnect, against 862-1,034 at the nodes' moments; docs/benchmarks.md),
 * and a wider draw made every poll shorter: 11 % more polls at a fifth, enough to keep a
 * reconnect storm from settling.
 * A poll that comes in less than a hundredth of S before its node's moment is held S rather than
 * answered at once: one poll fewer, and the node stays that close to its moment.
 */
export function holdMs(nodeId: string, waitSeconds: number, now = Date.now()): number {
  const cycle = waitSeconds * 1000;
  const toMoment = (spreadOf(nodeId) * cycle - (now % cycle) + cycle) % cycle;
  return toMoment < cycle / 100 ? cycle : toMoment;
}

export const nodeSideRoutes: FastifyPluginAsyncTypebox = async (app) => {
  // What nodes ask and send reads and writes through their lane of the database (RegistryContext.nodeDb);
  // the rest of the context is the app's own, live (a TLS reload replaces ctx.trust).
  const ctx: RegistryContext = Object.create(app.ctx, { db: { value: app.ctx.nodeDb } });
  const seenRefreshSeconds = seenRefreshSecondsOf(ctx.config.nodeOfflineAfterSeconds);
  const fallback = new FallbackPolls(ctx);
  app.addHook('onClose', async () => fallback.close());

  app.get('/v1/nodes/:id/desired-state', {
    schema: {
      tags: ['node agents'],
      summary: "The whole desired state of this node (node key). With If-None-Match and ?wait=S: long-polls until it changes, else 304 after at most S seconds, at the node's own moment of every S-second cycle (so that the nodes' polls do not come back in step).",
      security: bearer,
      params: IdParams,
      querystring: DesiredStateQuery,
      response: answers({ 200: DesiredState, 304: Type.Null({ description: 'not modified' }) }),
    },
  }, async (req, reply) => {
    requireNode(req, req.params.id);
    // A node polls all the time: one statement (or none) rewrites its last_seen once that has aged,
    // and only a node coming back from offline takes a transaction (its node.online event).
    // A node whose reports this replica remembers has last_seen written with the others, every second.
    if (!ctx.reports?.seen(req.params.id)) {
      const before = await touchNodeSeen(ctx.db, req.params.id, seenRefreshSeconds);
      if (before && before !== 'online') await withChanges(ctx, (q, changes) => markSeen(q, changes, req.params.id));
    }
    const known = req.headers['if-none-match'];
    const wait = Math.min(req.query.wait ?? 0, ctx.config.longPollMaxSeconds);
    let doc: NodeDocument;
    if (known && wait > 0) {
      // Subscribe before reading, so a change landing in between still wakes us. A document
      // unchanged since the replica last built it comes from memory (DocumentCache); after a
      // wake by a change it is built anew.
      let woken: 'change' | 'time' | 'gone' | null = null;
      let wake!: () => void;
      const changed = new Promise<void>((resolve) => (wake = resolve));
      const wakeBy = (why: 'change' | 'time' | 'gone') => {
        woken ??= why;
        wake();
      };
      const unsubscribe = await ctx.fanout.subscribe(nodeChannel(req.params.id), () => wakeBy('change'));
      const timer = setTimeout(() => wakeBy('time'), holdMs(req.params.id, wait));
      const forgetHeld = fallback.hold(req.params.id, known, () => wakeBy('change'));
      const onGone = () => wakeBy('gone');
      reply.raw.on('close', onGone);
      const forgetClose = ctx.closing.onClose(onGone);
      try {
        // No pool connection is held while waiting: each read is one statement.
        doc = await ctx.documents.get(ctx, req.params.id, { unless: known });
        if (doc.etag === known) {
          await changed;
          // Woken by shutdown: answer 'unchanged' without the database, which is about to close;
          // the agent polls again, on another replica. A node that hung up reads nothing either.
          if (ctx.closing.closed || woken === 'gone') return reply.header('etag', doc.etag).header('cache-control', 'no-cache').code(304).send(null);
          doc = await ctx.documents.get(ctx, req.params.id, { fresh: woken === 'change', unless: known });
          // A key revoked while this poll waited answers as it would on a new request.
          if (doc.revoked) throw new AppError('node_key_revoked', `the key of node ${req.params.id} was revoked; enroll the node again with a new token from its site`);
        }
      } finally {
        clearTimeout(timer);
        forgetHeld();
        unsubscribe();
        forgetClose();
      }
    } else {
      doc = await ctx.documents.get(ctx, req.params.id, { unless: known });
    }
    const etag = doc.etag;
    reply.header('etag', etag).header('cache-control', 'no-cache');
    if (known === etag || !doc.body) return reply.code(304).send(null);
    // Sent as serialised for the ETag: the same bytes, and no second pass over a big document.
    // (fastify sends a string with a JSON type as it is, past the response schema's serialiser.)
    return reply.type('application/json; charset=utf-8').send(doc.body as unknown as DesiredState);
  });

  app.put('/v1/nodes/:id/observed-state', {
    // An agent's report carries its tools' messages as they came: mend them rather than lose the report.
    config: { mendText: true },
    schema: {
      tags: ['node agents'],
      summary: 'Report sliver states, image fetch progress and usage (node key). A deleting sliver absent from the report is gone.',
      security: bearer,
      params: IdParams,
      body: ObservedState,
      response: answers({ 200: Type.Object({ ok: Type.Literal(true), updated: Type.Integer(), removed: Type.Integer() }) }),
    },
  }, async (req, reply) => {
    const nodeId = requireNode(req, req.params.id).id;
    const body = req.body;
    try {
      const out = await acceptReport(ctx, nodeId, body, { usageSampleSeconds: ctx.config.usageSampleSeconds, seenRefreshSeconds, memo: ctx.reports ?? undefined, turn: ctx.reportWrites, gone: () => reply.raw.destroyed });
      return { ok: true as const, ...out };
    } catch (err) {
      // Nobody reads this answer: the connection is gone.
      if (err instanceof ReportDropped) return sendProblem(reply.header('retry-after', String(RETRY_AFTER_SECONDS)), 503, 'report_dropped', err.message);
      throw err;
    }
  });

  app.post('/v1/nodes/:id/key', {
    schema: {
      tags: ['node agents'],
      summary: 'A new key for this node (node key). The old key keeps working until the new one is first used, and ' +
        'a short grace after that, so a running agent never loses contact (planetlite-agent rotate-key).',
      security: bearer,
      params: IdParams,
      response: answers({ 201: NodeKey }),
    },
  }, async (req, reply) => reply.code(201).send(await rotateNodeKey(ctx, requireNode(req, req.params.id).id)));

  app.put('/v1/nodes/:id/slivers/:sliver_id/console', {
    bodyLimit: SLIVER_CONSOLE_MAX_BYTES,
    config: { mendText: true },
    schema: {
      tags: ['node agents'],
      summary: `Upload the tail of a sliver's console log (node key): text/plain in UTF-8, at most ${SLIVER_CONSOLE_MAX_BYTES} bytes (more is 413). ` +
        'It replaces the one stored; NUL characters are dropped. The sliver must be on this node.',
      security: bearer,
      params: ConsoleParams,
      consumes: ['text/plain'],
      body: Type.String({ description: 'the tail of the console log' }),
      response: answers({ 200: SliverConsoleReceipt }),
    },
    // Who and what before the body is read, so a stranger or a wrong upload costs no 64 KiB.
    preParsing: async (req) => {
      requireNode(req, req.params.id);
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'text/plain') throw new AppError('unsupported_media_type', `send the console log as text/plain in UTF-8, not '${type || 'nothing'}'`);
      if (Number(req.headers['content-length'] ?? NaN) > SLIVER_CONSOLE_MAX_BYTES) {
        throw new AppError('payload_too_large', `the console log is larger than ${SLIVER_CONSOLE_MAX_BYTES} bytes; upload only its last ${SLIVER_CONSOLE_MAX_BYTES} bytes`);
      }
    },
  }, async (req) => {
    const nodeId = requireNode(req, req.params.id).id;
    const sliverId = req.params.sliver_id;
    // NULs, which a serial console may well send, were dropped at the edge (mendText).
    const text = req.body;
    const bytes = Buffer.byteLength(text, 'utf8');
    // One statement: the sliver must be this node's, and it must still exist when the row lands.
    const stored = await storeConsole(ctx.db, sliverId, nodeId, text, bytes);
    if (!stored) throw new AppError('not_found', `sliver ${sliverId} is not on node ${nodeId}`);
    return { sliver_id: sliverId, bytes, updated_at: stored.updated_at };
  });

  app.post('/v1/nodes/:id/events', {
    config: { mendText: true },
    schema: {
      tags: ['node agents'],
      summary: 'Record an event seen on the node, e.g. watchdog.reset with the figures behind it (node key)',
      security: bearer,
      params: IdParams,
      body: NodeEventCreate,
      response: answers({ 201: Event }),
    },
  }, async (req, reply) => {
    const nodeId = requireNode(req, req.params.id).id;
    const ev = await withChanges(ctx, async (q, changes) => {
      let slice: string | null = null;
      if (req.body.sliver) {
        slice = await sliceOfSliverOn(q, req.body.sliver, nodeId);
        if (!slice) throw new AppError('not_found', `sliver ${req.body.sliver} is not on this node`);
      }
      return changes.record(q, { type: req.body.type, node: nodeId, slice, sliver: req.body.sliver ?? null, data: req.body.data ?? {} });
    });
    ctx.notifier.after([ev]);
    return reply.code(201).send(ev);
  });
};
