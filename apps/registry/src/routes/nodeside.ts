// What node agents call: their desired state (ETag + long-poll), their observed state, their events,
// their slivers' console logs.
import { createHash } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import {
  DesiredState,
  DesiredStateQuery,
  Event,
  NodeEventCreate,
  ObservedState,
  SLIVER_CONSOLE_MAX_BYTES,
  SliverConsoleReceipt,
  type DesiredSliver,
  type NodeCapabilities,
  type SliverUsage,
} from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import { requireNode } from '../plugins/auth.js';
import { iso, json, type Row } from '../services/mappers.js';
import { nodeChannel, withChanges, type Changes } from '../services/changes.js';
import { dropSliceIfEmpty } from '../services/slices.js';
import type { RegistryContext } from '../context.js';
import { answers, bearer, IdParams } from './common.js';

export async function desiredStateOf(ctx: RegistryContext, nodeId: string): Promise<DesiredState> {
  const { db, config } = ctx;
  const { rows: nodes } = await db.query('SELECT address, port_first, port_last FROM nodes WHERE id = $1', [nodeId]);
  const node = nodes[0];
  if (!node) throw new AppError('not_found', `node ${nodeId} not found`);
  const { rows } = await db.query(
    `SELECT s.id, s.slice, s.kind, s.desired, s.restart_seq, s.reset_seq, s.port_first, s.port_last,
            sl.image, sl.resources, sl.memory_reset, sl.expires_at, i.sha256, i.magnet
     FROM slivers s JOIN slices sl ON sl.name = s.slice LEFT JOIN images i ON i.name = sl.image
     WHERE s.node_id = $1 ORDER BY s.id`,
    [nodeId],
  );
  const slices = [...new Set(rows.map((r) => r.slice as string))];
  const { rows: keys } = await db.query<{ slice: string; key: string }>(
    `SELECT DISTINCT m.slice, k.key FROM slice_members m JOIN ssh_keys k ON k.user_id = m.user_id
     WHERE m.slice = ANY($1) ORDER BY m.slice, k.key`,
    [slices],
  );
  const slivers: DesiredSliver[] = rows.map((r: Row) => ({
    id: r.id as string,
    slice: r.slice as string,
    kind: r.kind as DesiredSliver['kind'],
    desired: r.desired as DesiredSliver['desired'],
    restart_seq: r.restart_seq as number,
    reset_seq: r.reset_seq as number,
    image: {
      name: r.image as string,
      sha256: (r.sha256 as string | null) ?? null,
      magnet: (r.magnet as string | null) ?? null,
      web_seed: r.sha256 ? `${config.publicUrl}/v1/images/${encodeURIComponent(r.image as string)}/archive` : null,
    },
    resources: json(r.resources),
    memory_reset: r.memory_reset as DesiredSliver['memory_reset'],
    ports: { first: r.port_first as number, last: r.port_last as number },
    expires_at: iso(r.expires_at),
    keys: keys.filter((k) => k.slice === r.slice).map((k) => k.key),
  }));
  return { node_id: nodeId, address: node.address as string, port_window: { first: node.port_first as number, last: node.port_last as number }, slivers };
}

export const etagOf = (doc: DesiredState): string => `"${createHash('sha256').update(JSON.stringify(doc)).digest('base64url').slice(0, 27)}"`;

/** A node that calls in is online; the first call after silence records node.online. */
async function markSeen(q: Queryable, changes: Changes, nodeId: string): Promise<void> {
  const { rows } = await q.query<{ state: string }>('SELECT state FROM nodes WHERE id = $1 FOR NO KEY UPDATE', [nodeId]);
  await q.query("UPDATE nodes SET last_seen = now(), state = 'online' WHERE id = $1", [nodeId]);
  if (rows[0]?.state === 'offline') await changes.record(q, { type: 'node.online', node: nodeId });
}

/**
 * Capabilities the agent learnt after enrollment (its qemu probe runs in the background) replace
 * the enrolled ones. Written and recorded as node.capabilities only when they differ, since every
 * report carries them.
 */
async function updateCapabilities(q: Queryable, changes: Changes, nodeId: string, caps: NodeCapabilities): Promise<void> {
  const { rows } = await q.query('SELECT capabilities FROM nodes WHERE id = $1', [nodeId]);
  const before = rows[0] ? json<NodeCapabilities>(rows[0].capabilities) : null;
  if (before && before.lxc === caps.lxc && before.kvm === caps.kvm && before.kvm_accel === caps.kvm_accel && before.arch === caps.arch) return;
  const after: NodeCapabilities = { lxc: caps.lxc, kvm: caps.kvm, kvm_accel: caps.kvm_accel, ...(caps.arch ? { arch: caps.arch } : {}) };
  await q.query('UPDATE nodes SET capabilities = $2 WHERE id = $1', [nodeId, JSON.stringify(after)]);
  await changes.record(q, { type: 'node.capabilities', node: nodeId, data: { from: before, to: after } });
}

const ConsoleParams = Type.Object({ id: Type.String({ format: 'uuid' }), sliver_id: Type.String({ format: 'uuid' }) });

export const nodeSideRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.get('/v1/nodes/:id/desired-state', {
    schema: {
      tags: ['node agents'],
      summary: 'The whole desired state of this node (node key). With If-None-Match and ?wait=S: long-polls until it changes, else 304.',
      security: bearer,
      params: IdParams,
      querystring: DesiredStateQuery,
      response: answers({ 200: DesiredState, 304: Type.Null({ description: 'not modified' }) }),
    },
  }, async (req, reply) => {
    requireNode(req, req.params.id);
    await withChanges(ctx, (q, changes) => markSeen(q, changes, req.params.id));
    const known = req.headers['if-none-match'];
    let doc = await desiredStateOf(ctx, req.params.id);
    let etag = etagOf(doc);
    const wait = Math.min(req.query.wait ?? 0, ctx.config.longPollMaxSeconds);
    if (known === etag && wait > 0) {
      // Subscribe before re-reading, so a change landing in between still wakes us.
      let wake!: () => void;
      const changed = new Promise<void>((resolve) => (wake = resolve));
      const unsubscribe = await ctx.fanout.subscribe(nodeChannel(req.params.id), () => wake());
      const timer = setTimeout(() => wake(), wait * 1000);
      const onGone = () => wake();
      reply.raw.on('close', onGone);
      ctx.closing.addEventListener('abort', onGone);
      if (ctx.closing.aborted) wake();
      try {
        doc = await desiredStateOf(ctx, req.params.id);
        etag = etagOf(doc);
        if (etag === known) {
          await changed;
          doc = await desiredStateOf(ctx, req.params.id);
          etag = etagOf(doc);
        }
      } finally {
        clearTimeout(timer);
        unsubscribe();
        ctx.closing.removeEventListener('abort', onGone);
      }
    }
    reply.header('etag', etag).header('cache-control', 'no-cache');
    if (known === etag) return reply.code(304).send(null);
    return doc;
  });

  app.put('/v1/nodes/:id/observed-state', {
    schema: {
      tags: ['node agents'],
      summary: 'Report sliver states, image fetch progress and usage (node key). A deleting sliver absent from the report is gone.',
      security: bearer,
      params: IdParams,
      body: ObservedState,
      response: answers({ 200: Type.Object({ ok: Type.Literal(true), updated: Type.Integer(), removed: Type.Integer() }) }),
    },
  }, async (req) => {
    const nodeId = requireNode(req, req.params.id).id;
    const body = req.body;
    return withChanges(ctx, async (q, changes) => {
      await markSeen(q, changes, nodeId);
      if (body.capabilities) await updateCapabilities(q, changes, nodeId, body.capabilities);
      if (body.images) await q.query('UPDATE nodes SET images = $2 WHERE id = $1', [nodeId, JSON.stringify(body.images)]);
      const { rows } = await q.query('SELECT id, slice, state, desired, error, address FROM slivers WHERE node_id = $1 FOR NO KEY UPDATE', [nodeId]);
      const reported = new Map(body.slivers.map((s) => [s.id, s]));
      let updated = 0;
      let removed = 0;
      // Every sliver's row is refreshed (usage moves on every report) in one statement, not one per sliver.
      const refresh: Array<{ id: string; state: string; error: string | null; address: string | null; usage: object | null }> = [];
      const samples: Array<{ id: string } & SliverUsage> = [];
      for (const row of rows) {
        const id = row.id as string;
        const slice = row.slice as string;
        const obs = reported.get(id);
        const deleting = row.desired === 'deleted';
        if (deleting && (!obs || obs.state === 'deleted')) {
          await q.query('DELETE FROM slivers WHERE id = $1', [id]);
          await changes.record(q, { type: 'sliver.state', slice, node: nodeId, sliver: id, data: { state: 'deleted' } });
          await dropSliceIfEmpty(q, slice);
          removed++;
          continue;
        }
        if (!obs || obs.state === 'deleted') continue;
        // A sliver being deleted stays 'deleting' until it is gone, unless its teardown failed.
        const state = deleting && obs.state !== 'failed' ? 'deleting' : obs.state;
        const error = obs.error ?? null;
        const address = obs.address === undefined ? (row.address as string | null) : obs.address;
        const usage = {
          cpu_seconds: obs.cpu_seconds,
          memory_bytes: obs.memory_bytes,
          disk_bytes: obs.disk_bytes,
          net_rx_bytes: obs.net_rx_bytes,
          net_tx_bytes: obs.net_tx_bytes,
        };
        const hasUsage = Object.values(usage).some((v) => v !== undefined);
        refresh.push({ id, state, error, address, usage: hasUsage ? usage : null });
        if (hasUsage) samples.push({ id, ...usage });
        if (state !== row.state || error !== row.error) {
          updated++;
          await changes.record(q, { type: 'sliver.state', slice, node: nodeId, sliver: id, data: { state, error, from: row.state } });
        }
      }
      if (refresh.length) {
        await q.query(
          `UPDATE slivers AS s SET state = o.state, error = o.error, address = o.address, usage = COALESCE(o.usage || jsonb_build_object('at', now()), s.usage),
             updated_at = CASE WHEN s.state IS DISTINCT FROM o.state OR s.error IS DISTINCT FROM o.error THEN now() ELSE s.updated_at END
           FROM jsonb_to_recordset($1::jsonb) AS o(id uuid, state text, error text, address text, usage jsonb)
           WHERE s.id = o.id`,
          [JSON.stringify(refresh)],
        );
      }
      if (samples.length) {
        // Reports come every 30 s and after every change, with jitter: a sliver gets a history
        // sample when its last one is nearly an interval old (90%), else a 60 s cadence that
        // arrives a little early would be kept only every other time.
        await q.query(
          `INSERT INTO sliver_usage (sliver, at, cpu_seconds, memory_bytes, disk_bytes, net_rx_bytes, net_tx_bytes)
           SELECT o.id, now(), o.cpu_seconds, o.memory_bytes, o.disk_bytes, o.net_rx_bytes, o.net_tx_bytes
           FROM jsonb_to_recordset($1::jsonb)
             AS o(id uuid, cpu_seconds double precision, memory_bytes bigint, disk_bytes bigint, net_rx_bytes bigint, net_tx_bytes bigint)
           WHERE NOT EXISTS (SELECT 1 FROM sliver_usage u WHERE u.sliver = o.id AND u.at > now() - $2::float8 * interval '1 second')`,
          [JSON.stringify(samples), ctx.config.usageSampleSeconds * 0.9],
        );
      }
      return { ok: true as const, updated, removed };
    });
  });

  app.put('/v1/nodes/:id/slivers/:sliver_id/console', {
    bodyLimit: SLIVER_CONSOLE_MAX_BYTES,
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
    // PostgreSQL text cannot hold NUL, and a serial console may well send some.
    const text = req.body.replaceAll('\u0000', '');
    const bytes = Buffer.byteLength(text, 'utf8');
    // One statement: the sliver must be this node's, and it must still exist when the row lands.
    const { rows } = await ctx.db.query(
      `INSERT INTO sliver_console (sliver_id, text, bytes, updated_at)
       SELECT id, $3, $4, now() FROM slivers WHERE id = $1 AND node_id = $2
       ON CONFLICT (sliver_id) DO UPDATE SET text = EXCLUDED.text, bytes = EXCLUDED.bytes, updated_at = EXCLUDED.updated_at
       RETURNING updated_at`,
      [sliverId, nodeId, text, bytes],
    );
    if (!rows[0]) throw new AppError('not_found', `sliver ${sliverId} is not on node ${nodeId}`);
    return { sliver_id: sliverId, bytes, updated_at: iso(rows[0].updated_at) };
  });

  app.post('/v1/nodes/:id/events', {
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
        const { rows } = await q.query<{ slice: string }>('SELECT slice FROM slivers WHERE id = $1 AND node_id = $2', [req.body.sliver, nodeId]);
        if (!rows[0]) throw new AppError('not_found', `sliver ${req.body.sliver} is not on this node`);
        slice = rows[0].slice;
      }
      return changes.record(q, { type: req.body.type, node: nodeId, slice, sliver: req.body.sliver ?? null, data: req.body.data ?? {} });
    });
    ctx.notifier.after([ev]);
    return reply.code(201).send(ev);
  });
};
