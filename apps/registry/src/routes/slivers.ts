// Slivers: a slice's share of one node, with its port range and lifecycle actions.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { Sliver, SliverAction, SliverConsole, SliverCreate, UsageHistory, UsageQuery, type NodeCapabilities, type Slice } from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import { requireUser } from '../plugins/auth.js';
import { allowedRole, piSiteOf, refuse, requireSliceRole, roleOf, type UserPrincipal } from '../services/authz.js';
import { publishChange, withChanges } from '../services/changes.js';
import { allocatePorts, loadSlice, loadSliver, requireImageServes } from '../services/slices.js';
import { requireNodeTakesSlivers } from '../services/node-lifecycle.js';
import * as slivers from '../repositories/slivers.js';
import { findNodeToPlace, takeSpare } from '../repositories/nodes.js';
import { usageSamples } from '../repositories/usage.js';
import { findConsole } from '../repositories/console.js';
import { answers, bearer, IdParams, NameParams } from './common.js';

/** The sliver, if the caller is a member of its slice, a pi of its site, or an admin. */
async function authorisedSliver(q: Queryable, me: UserPrincipal, id: string, what: string): Promise<Sliver> {
  const found = await slivers.findSliverFor(q, id, me.id);
  if (!found) throw new AppError('not_found', `sliver ${id} not found`);
  allowedRole(roleOf(me, found.site, found.member), ['admin', 'pi', 'member'], found.sliver.slice, what);
  return found.sliver;
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
  if (kind === 'lxc') return caps.lxc ? null : "its agent reports no LXC support (lxc: false); a node just enrolled says what it runs in its agent's first report, seconds after planetlite-agent run starts";
  if (!caps.kvm) return 'its agent reports no qemu/KVM support (kvm: false)';
  if (caps.kvm_accel === null) return 'its agent has not reported a VM accelerator yet (kvm: true, kvm_accel: null), so its qemu probe may still be running; try again shortly';
  return null;
}

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
      const found = await findNodeToPlace(q, req.body.node_id, req.params.name);
      if (!found) throw new AppError('not_found', `node ${req.body.node_id} not found`);
      const { node } = found;
      requireNodeTakesSlivers(node);
      // The image may have been published after the slice was made: checked again here.
      const image = await requireImageServes(q, slice.image, slice.kind);
      const caps = node.capabilities;
      const why = incapability(caps, slice.kind) ??
        (image && caps.arch && caps.arch !== image.arch ? `it is ${caps.arch} and image ${slice.image} is ${image.arch}` : null);
      if (why) {
        throw new AppError('node_incapable', `node ${node.hostname} (${node.id}) cannot run ${slice.kind} slivers: ${why}`);
      }
      if (found.sliceHasSliver) throw new AppError('already_exists', `slice ${req.params.name} already has a sliver on node ${node.hostname}`);
      const ports = await allocatePorts(q, node.id, node.port_window, ctx.config.portsPerSliver);
      // A spare the node keeps ready for this image and kind (its warm pool) becomes the sliver:
      // the agent hands it out instead of building one. A published image is matched by its
      // sha256, one only imported on nodes by its name.
      const spare = await takeSpare(q, node.id, { kind: slice.kind, image: slice.image, sha256: image?.sha256 ?? null });
      // The site's row is locked last, for the quota alone, by the statement that inserts.
      const made = await slivers.insertSliver(
        q,
        { id: spare ?? randomUUID(), slice: req.params.name, site: slice.site, nodeId: node.id, kind: slice.kind, ports },
        { state: 'pending', ports, by: me.email },
      );
      if ('maxSlivers' in made) throw new AppError('sliver_quota_exceeded', `site ${slice.site} may have at most ${made.maxSlivers} slivers`);
      changes.recorded(made.event);
      changes.touch(node.id);
      return made.sliver;
    });
    return reply.code(202).send(sliver);
  });

  app.get('/v1/slices/:name/slivers', {
    schema: { tags: ['slivers'], summary: "A slice's slivers (member, pi, admin)", security: bearer, params: NameParams, response: answers({ 200: Type.Object({ slivers: Type.Array(Sliver) }) }) },
  }, async (req) => {
    const me = requireUser(req);
    const slice = await loadSlice(ctx.db, req.params.name);
    await requireSliceRole(ctx.db, me, slice, ['admin', 'pi', 'member'], 'see');
    return { slivers: await slivers.sliversOfSlice(ctx.db, req.params.name) };
  });

  app.get('/v1/slivers/:id', {
    schema: { tags: ['slivers'], summary: 'One sliver (member, pi, admin)', security: bearer, params: IdParams, response: answers({ 200: Sliver }) },
  }, async (req) => authorisedSliver(ctx.db, requireUser(req), req.params.id, 'see'));

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
    const samples = await usageSamples(ctx.db, req.params.id, since, until, MAX_USAGE_SAMPLES + 1);
    return {
      sliver: req.params.id,
      interval_seconds: ctx.config.usageSampleSeconds,
      since: since.toISOString(),
      until: until.toISOString(),
      samples: samples.slice(0, MAX_USAGE_SAMPLES),
      truncated: samples.length > MAX_USAGE_SAMPLES,
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
    const log = await findConsole(ctx.db, req.params.id);
    if (!log) throw new AppError('not_found', `no console log for sliver ${req.params.id} yet: the node uploads it once the sliver has started`);
    return { sliver_id: req.params.id, ...log };
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
  }, async (req, reply) => reply.code(202).send(await changeSliver(requireUser(req), req.params.id, req.body.action)));

  app.delete('/v1/slivers/:id', {
    schema: { tags: ['slivers'], summary: 'Tear a sliver down (member, pi, admin); gone when its node confirms', security: bearer, params: IdParams, response: answers({ 202: Sliver }) },
  }, async (req, reply) => reply.code(202).send(await changeSliver(requireUser(req), req.params.id, 'delete')));

  /** An action or a teardown, in one statement (repositories/slivers.ts), then its node woken. */
  async function changeSliver(me: UserPrincipal, id: string, change: SliverAction['action'] | 'delete'): Promise<Sliver> {
    const out = await slivers.changeSliver(ctx.db, id, change, { userId: me.id, email: me.email, admin: me.admin, piSite: piSiteOf(me) });
    if (out.done) {
      await publishChange(ctx, [out.event], [out.sliver.node_id]);
      return out.sliver;
    }
    if (out.why === 'not_found') throw new AppError('not_found', `sliver ${id} not found`);
    if (out.why === 'forbidden') refuse(out.slice ?? '', change === 'delete' ? 'delete slivers of' : 'act on slivers of');
    // Already being deleted: a delete answers it as it is; an action is refused.
    if (change !== 'delete') throw new AppError('sliver_deleting', `sliver ${id} is being deleted`);
    return loadSliver(ctx.db, id);
  }
};
