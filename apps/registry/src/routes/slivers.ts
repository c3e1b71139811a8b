// Slivers: a slice's share of one node, with its port range and lifecycle actions.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { Sliver, SliverAction, SliverConsole, SliverCreate, UsageHistory, UsageQuery, type NodeCapabilities, type Slice } from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import { requireUser, type UserPrincipal } from '../plugins/auth.js';
import { SLIVER_SELECT, iso, json, toSliver, toUsageSample, type Row } from '../services/mappers.js';
import { withChanges } from '../services/changes.js';
import { allocatePorts, loadSlice, requireImageServes, requireSliceRole } from '../services/slices.js';
import { answers, bearer, IdParams, NameParams } from './common.js';

async function loadSliver(q: Queryable, id: string, lock = false): Promise<Row> {
  const { rows } = await q.query(`${SLIVER_SELECT} WHERE s.id = $1${lock ? ' FOR NO KEY UPDATE OF s' : ''}`, [id]);
  if (!rows[0]) throw new AppError('not_found', `sliver ${id} not found`);
  return rows[0];
}

/** The sliver, if the caller is a member of its slice, a pi of its site, or an admin. */
async function authorisedSliver(q: Queryable, me: UserPrincipal, id: string, what: string, lock = false): Promise<Row> {
  const sliver = await loadSliver(q, id, lock);
  const slice = await loadSlice(q, sliver.slice as string);
  await requireSliceRole(q, me, slice, ['admin', 'pi', 'member'], what);
  return sliver;
}

/** One history answer holds at most this many samples (a week at one a minute). */
const MAX_USAGE_SAMPLES = 10_000;
const DEFAULT_USAGE_WINDOW_MS = 24 * 3600_000;

/** A date-time the schema let through but Date cannot hold (a leap second) is still the caller's error. */
function queryTime(value: string, field: string): Date {
  const at = new Date(value);
  if (Number.isNaN(at.getTime())) throw new AppError('invalid_request', `querystring.${field} must be an RFC 3339 time, e.g. 2030-01-31T00:00:00Z`);
  return at;
}

/**
 * Why a node cannot run slivers of this kind, or null when it can. A kvm node with no accelerator
 * yet has not finished its qemu probe: a VM placed there now might never start.
 */
function incapability(caps: NodeCapabilities, kind: Slice['kind']): string | null {
  if (kind === 'lxc') return caps.lxc ? null : 'its agent reports no LXC support (lxc: false)';
  if (!caps.kvm) return 'its agent reports no qemu/KVM support (kvm: false)';
  if (caps.kvm_accel === null) return 'its agent has not reported a VM accelerator yet (kvm: true, kvm_accel: null), so its qemu probe may still be running; try again shortly';
  return null;
}

const ACTION_SQL: Record<SliverAction['action'], string> = {
  start: "desired = 'running'",
  stop: "desired = 'stopped'",
  restart: "desired = 'running', restart_seq = restart_seq + 1",
  reset: "desired = 'running', reset_seq = reset_seq + 1",
  freeze: "desired = 'frozen'",
  thaw: "desired = 'running'",
};

export const sliverRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/slices/:name/slivers', {
    schema: {
      tags: ['slivers'],
      summary: 'Add a sliver of this slice on a node (member, pi, admin); the registry allocates its port range',
      security: bearer,
      params: NameParams,
      body: SliverCreate,
      response: answers({ 202: Sliver }),
    },
  }, async (req, reply) => {
    const me = requireUser(req);
    const sliver = await withChanges(ctx, async (q, changes) => {
      // Lock order everywhere: slice, node, site.
      const slice = await loadSlice(q, req.params.name, true);
      await requireSliceRole(q, me, slice, ['admin', 'pi', 'member'], 'add slivers to');
      if (slice.state !== 'active') throw new AppError('slice_deleting', `slice ${req.params.name} is being deleted`);
      const { rows: nodes } = await q.query('SELECT * FROM nodes WHERE id = $1 FOR NO KEY UPDATE', [req.body.node_id]);
      const node = nodes[0];
      if (!node) throw new AppError('not_found', `node ${req.body.node_id} not found`);
      // The image may have been published after the slice was made: checked again here.
      const image = await requireImageServes(q, slice.image as string, slice.kind as Slice['kind']);
      const caps = json<NodeCapabilities>(node.capabilities);
      const why = incapability(caps, slice.kind as Slice['kind']) ??
        (image && caps.arch && caps.arch !== image.arch ? `it is ${caps.arch} and image ${slice.image as string} is ${image.arch}` : null);
      if (why) {
        throw new AppError('node_incapable', `node ${node.hostname as string} (${node.id as string}) cannot run ${slice.kind as string} slivers: ${why}`);
      }
      const { rows: sites } = await q.query<{ max_slivers: number }>('SELECT max_slivers FROM sites WHERE login_base = $1 FOR NO KEY UPDATE', [slice.site]);
      const { rows: dup } = await q.query('SELECT 1 FROM slivers WHERE slice = $1 AND node_id = $2', [req.params.name, req.body.node_id]);
      if (dup[0]) throw new AppError('already_exists', `slice ${req.params.name} already has a sliver on node ${node.hostname as string}`);
      const { rows: count } = await q.query<{ n: number }>('SELECT count(*)::int AS n FROM slivers WHERE site = $1', [slice.site]);
      const max = sites[0]?.max_slivers ?? 0;
      if ((count[0]?.n ?? 0) >= max) throw new AppError('sliver_quota_exceeded', `site ${slice.site as string} may have at most ${max} slivers`);
      const ports = await allocatePorts(q, req.body.node_id, { first: node.port_first as number, last: node.port_last as number }, ctx.config.portsPerSliver);
      const id = randomUUID();
      await q.query(
        `INSERT INTO slivers (id, slice, site, node_id, kind, port_first, port_last) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [id, req.params.name, slice.site, req.body.node_id, slice.kind, ports.first, ports.last],
      );
      await changes.record(q, { type: 'sliver.state', slice: req.params.name, node: req.body.node_id, sliver: id, data: { state: 'pending', ports, by: me.email } });
      changes.touch(req.body.node_id);
      return toSliver(await loadSliver(q, id));
    });
    return reply.code(202).send(sliver);
  });

  app.get('/v1/slices/:name/slivers', {
    schema: { tags: ['slivers'], summary: "A slice's slivers (member, pi, admin)", security: bearer, params: NameParams, response: answers({ 200: Type.Object({ slivers: Type.Array(Sliver) }) }) },
  }, async (req) => {
    const me = requireUser(req);
    const slice = await loadSlice(ctx.db, req.params.name);
    await requireSliceRole(ctx.db, me, slice, ['admin', 'pi', 'member'], 'see');
    const { rows } = await ctx.db.query(`${SLIVER_SELECT} WHERE s.slice = $1 ORDER BY s.created_at, s.id`, [req.params.name]);
    return { slivers: rows.map(toSliver) };
  });

  app.get('/v1/slivers/:id', {
    schema: { tags: ['slivers'], summary: 'One sliver (member, pi, admin)', security: bearer, params: IdParams, response: answers({ 200: Sliver }) },
  }, async (req) => toSliver(await authorisedSliver(ctx.db, requireUser(req), req.params.id, 'see')));

  app.get('/v1/slivers/:id/usage', {
    schema: {
      tags: ['slivers'],
      summary: "A sliver's accounting history, oldest first: one sample about every interval_seconds (member, pi, admin)",
      security: bearer,
      params: IdParams,
      querystring: UsageQuery,
      response: answers({ 200: UsageHistory }),
    },
  }, async (req) => {
    await authorisedSliver(ctx.db, requireUser(req), req.params.id, 'see');
    const until = req.query.until ? queryTime(req.query.until, 'until') : new Date();
    const since = req.query.since ? queryTime(req.query.since, 'since') : new Date(until.getTime() - DEFAULT_USAGE_WINDOW_MS);
    if (since > until) {
      throw new AppError('invalid_request', req.query.until ? 'querystring.since must not be after querystring.until' : 'querystring.since must not be in the future');
    }
    // One row more than an answer holds tells whether the window was cut short.
    const { rows } = await ctx.db.query(
      `SELECT at, cpu_seconds, memory_bytes, disk_bytes, net_rx_bytes, net_tx_bytes FROM sliver_usage
       WHERE sliver = $1 AND at >= $2 AND at <= $3 ORDER BY at LIMIT $4`,
      [req.params.id, since, until, MAX_USAGE_SAMPLES + 1],
    );
    return {
      sliver: req.params.id,
      interval_seconds: ctx.config.usageSampleSeconds,
      since: since.toISOString(),
      until: until.toISOString(),
      samples: rows.slice(0, MAX_USAGE_SAMPLES).map(toUsageSample),
      truncated: rows.length > MAX_USAGE_SAMPLES,
    };
  });

  app.get('/v1/slivers/:id/console', {
    schema: {
      tags: ['slivers'],
      summary: "The tail of a sliver's console log (a VM's serial console), as its node last uploaded it (member, pi, admin)",
      security: bearer,
      params: IdParams,
      response: answers({ 200: SliverConsole }),
    },
  }, async (req) => {
    await authorisedSliver(ctx.db, requireUser(req), req.params.id, 'see');
    const { rows } = await ctx.db.query('SELECT text, updated_at FROM sliver_console WHERE sliver_id = $1', [req.params.id]);
    const row = rows[0];
    if (!row) throw new AppError('not_found', `no console log for sliver ${req.params.id} yet: the node uploads it once the sliver has started`);
    return { sliver_id: req.params.id, text: row.text as string, updated_at: iso(row.updated_at) };
  });

  app.post('/v1/slivers/:id/actions', {
    schema: {
      tags: ['slivers'],
      summary: 'start, stop, restart, reset (rebuild from the image), freeze or thaw a sliver (member, pi, admin)',
      security: bearer,
      params: IdParams,
      body: SliverAction,
      response: answers({ 202: Sliver }),
    },
  }, async (req, reply) => {
    const me = requireUser(req);
    const out = await withChanges(ctx, async (q, changes) => {
      const s = await authorisedSliver(q, me, req.params.id, 'act on slivers of', true);
      if (s.desired === 'deleted') throw new AppError('sliver_deleting', `sliver ${req.params.id} is being deleted`);
      await q.query(`UPDATE slivers SET ${ACTION_SQL[req.body.action]}, updated_at = now() WHERE id = $1`, [req.params.id]);
      await changes.record(q, { type: 'sliver.action', slice: s.slice as string, node: s.node_id as string, sliver: req.params.id, data: { action: req.body.action, by: me.email } });
      changes.touch(s.node_id as string);
      return toSliver(await loadSliver(q, req.params.id));
    });
    return reply.code(202).send(out);
  });

  app.delete('/v1/slivers/:id', {
    schema: { tags: ['slivers'], summary: 'Tear a sliver down (member, pi, admin); gone when its node confirms', security: bearer, params: IdParams, response: answers({ 202: Sliver }) },
  }, async (req, reply) => {
    const me = requireUser(req);
    const out = await withChanges(ctx, async (q, changes) => {
      const s = await authorisedSliver(q, me, req.params.id, 'delete slivers of', true);
      if (s.desired !== 'deleted') {
        await q.query("UPDATE slivers SET desired = 'deleted', state = 'deleting', updated_at = now() WHERE id = $1", [req.params.id]);
        await changes.record(q, { type: 'sliver.state', slice: s.slice as string, node: s.node_id as string, sliver: req.params.id, data: { state: 'deleting', by: me.email } });
        changes.touch(s.node_id as string);
      }
      return toSliver(await loadSliver(q, req.params.id));
    });
    return reply.code(202).send(out);
  });
};
