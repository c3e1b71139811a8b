// Slices: create, read, renew, members, delete.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { MemberAdd, Slice, SliceCreate, SlicePatch, SliceRenew, LOGIN_BASE_PATTERN } from '@planetlite/api';
import { requireUser } from '../plugins/auth.js';
import { hasSiteRole, piSiteOf, requireSliceRole } from '../services/authz.js';
import { publishChange, withChanges } from '../services/changes.js';
import { imageIncompatible, loadSlice, siteOfSlice, sliceView, tearDownSlice } from '../services/slices.js';
import * as slices from '../repositories/slices.js';
import { nodesOfSlice } from '../repositories/slivers.js';
import { findSite } from '../repositories/sites.js';
import { findUser } from '../repositories/users.js';
import { answers, bearer, NameParams } from './common.js';

const DEFAULT_RESOURCES = { memory_mb: 512, cpu_shares: 1024, disk_mb: 2048, net_kbps: 10000 };
const DAY = 86400_000;
/** A user who is not an admin learns no more of a site that does not exist. */
const noSite = (site: string) => new AppError('forbidden', `only a pi of site ${site} may create slices named ${site}_…`);

export const sliceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/slices', {
    schema: { tags: ['slices'], summary: 'Create a slice (pi of its site, admin); the creator becomes a member', security: bearer, body: SliceCreate, response: answers({ 201: Slice }) },
  }, async (req, reply) => {
    const me = requireUser(req);
    const b = req.body;
    const site = siteOfSlice(b.name);
    const kind = b.kind ?? 'lxc';
    const image = b.image ?? ctx.config.defaultImage;
    // Refused whatever the site holds; the words depend on whether it exists.
    if (!hasSiteRole(me, site, 'pi')) {
      if (!(await findSite(ctx.db, site))) throw noSite(site);
      throw new AppError('forbidden', `only a pi of site ${site}, or an admin, may create its slices`);
    }
    const expires = new Date(Date.now() + ctx.config.sliceLifetimeDays * DAY);
    // One statement: the site and image checked, the slice, its creator as a member, its event, and
    // the site's max_slices checked by the count trigger under the site's row lock (migration 010).
    const { siteEnabled, imageKinds, created } = await slices.createSlice(ctx.db, {
      name: b.name, site, description: b.description, url: b.url, kind, image,
      resources: { ...DEFAULT_RESOURCES, ...b.resources }, expires, createdBy: me.id, memoryReset: b.memory_reset ?? 'restart',
    }, { by: me.email, kind, expires_at: expires.toISOString() });
    if (siteEnabled === null) {
      if (!me.admin) throw noSite(site);
      throw new AppError('not_found', `site ${site} not found (a slice name starts with its site's login_base)`);
    }
    if (!siteEnabled) throw new AppError('forbidden', `site ${site} is disabled`);
    if (imageKinds && !imageKinds.includes(kind)) throw imageIncompatible(image, imageKinds, kind);
    if (!created) {
      const existing = await slices.findSlice(ctx.db, b.name);
      if (existing?.state === 'deleting') throw new AppError('slice_deleting', `slice ${b.name} is still being deleted; try again when its slivers are gone`);
      throw new AppError('already_exists', `slice ${b.name} already exists`);
    }
    await publishChange(ctx, [created.event]);
    return reply.code(201).send({ ...created.slice, members: [{ id: me.id, email: me.email, name: me.name }] });
  });

  app.get('/v1/slices', {
    schema: {
      tags: ['slices'],
      summary: 'Slices the caller may see: all for admins, their site for a pi, their own otherwise',
      security: bearer,
      querystring: Type.Object({ site: Type.Optional(Type.String({ pattern: LOGIN_BASE_PATTERN })) }, { additionalProperties: false }),
      response: answers({ 200: Type.Object({ slices: Type.Array(Slice) }) }),
    },
  }, async (req) => {
    const me = requireUser(req);
    const visible = await slices.listVisibleSlices(ctx.db, { site: req.query.site ?? null, admin: me.admin, piSite: piSiteOf(me), userId: me.id });
    const members = await slices.membersOfSlices(ctx.db, visible.map((s) => s.name));
    return { slices: visible.map((s) => ({ ...s, members: members.get(s.name) ?? [] })) };
  });

  app.get('/v1/slices/:name', {
    schema: { tags: ['slices'], summary: 'One slice (member, site pi, admin)', security: bearer, params: NameParams, response: answers({ 200: Slice }) },
  }, async (req) => {
    const me = requireUser(req);
    const row = await loadSlice(ctx.db, req.params.name);
    await requireSliceRole(ctx.db, me, row, ['admin', 'pi', 'member'], 'see');
    return sliceView(ctx.db, row);
  });

  app.patch('/v1/slices/:name', {
    schema: { tags: ['slices'], summary: "Change a slice's description or url (member, pi, admin), or its resources (pi, admin)", security: bearer, params: NameParams, body: SlicePatch, response: answers({ 200: Slice }) },
  }, async (req) => {
    const me = requireUser(req);
    return withChanges(ctx, async (q, changes) => {
      const row = await loadSlice(q, req.params.name, true);
      const { resources } = req.body;
      // Members may describe their slice; only whoever answers for the site's share may resize it.
      await requireSliceRole(q, me, row, resources ? ['admin', 'pi'] : ['admin', 'pi', 'member'], resources ? 'change the resources of' : 'change');
      const merged = resources ? { ...row.resources, ...resources } : null;
      const updated = await slices.patchSlice(q, req.params.name, {
        description: req.body.description ?? null, url: req.body.url ?? null, resources: merged, memoryReset: req.body.memory_reset ?? null,
      });
      if (req.body.memory_reset && req.body.memory_reset !== row.memory_reset) changes.touch(...(await nodesOfSlice(q, req.params.name)));
      if (merged) {
        await changes.record(q, { type: 'slice.resources_changed', slice: req.params.name, data: { by: me.email, resources: merged } });
        changes.touch(...(await nodesOfSlice(q, req.params.name)));
      }
      return sliceView(q, updated);
    });
  });

  app.post('/v1/slices/:name/members', {
    schema: { tags: ['slices'], summary: 'Add a member (pi, admin)', security: bearer, params: NameParams, body: MemberAdd, response: answers({ 200: Slice }) },
  }, async (req) => {
    const me = requireUser(req);
    return withChanges(ctx, async (q, changes) => {
      const row = await loadSlice(q, req.params.name, true);
      await requireSliceRole(q, me, row, ['admin', 'pi'], 'add members to');
      if (!(await findUser(q, req.body.user_id))) throw new AppError('not_found', `user ${req.body.user_id} not found`);
      if (await slices.addMember(q, req.params.name, req.body.user_id)) {
        await changes.record(q, { type: 'slice.member_added', slice: req.params.name, data: { user_id: req.body.user_id, by: me.email } });
        changes.touchAfterCommit((db) => nodesOfSlice(db, req.params.name));
      }
      return sliceView(q, row);
    });
  });

  app.delete('/v1/slices/:name/members/:user_id', {
    schema: {
      tags: ['slices'],
      summary: 'Remove a member (pi, admin)',
      security: bearer,
      params: Type.Object({ name: Type.String({ maxLength: 60 }), user_id: Type.String({ format: 'uuid' }) }),
      response: answers({ 200: Slice }),
    },
  }, async (req) => {
    const me = requireUser(req);
    return withChanges(ctx, async (q, changes) => {
      const row = await loadSlice(q, req.params.name, true);
      await requireSliceRole(q, me, row, ['admin', 'pi'], 'remove members from');
      if (!(await slices.removeMember(q, req.params.name, req.params.user_id))) throw new AppError('not_found', `user ${req.params.user_id} is not a member of ${req.params.name}`);
      await changes.record(q, { type: 'slice.member_removed', slice: req.params.name, data: { user_id: req.params.user_id, by: me.email } });
      changes.touchAfterCommit((db) => nodesOfSlice(db, req.params.name));
      return sliceView(q, row);
    });
  });

  app.post('/v1/slices/:name/renew', {
    schema: {
      tags: ['slices'],
      summary: `Move the expiry (member, pi, admin); at most ${ctx.config.maxRenewDays} days ahead unless admin; needs a description and url`,
      security: bearer,
      params: NameParams,
      body: SliceRenew,
      response: answers({ 200: Slice }),
    },
  }, async (req) => {
    const me = requireUser(req);
    const until = new Date(req.body.expires_at);
    return withChanges(ctx, async (q, changes) => {
      const row = await loadSlice(q, req.params.name, true);
      await requireSliceRole(q, me, row, ['admin', 'pi', 'member'], 'renew');
      if (row.state !== 'active') throw new AppError('slice_deleting', `slice ${req.params.name} is being deleted`);
      if (!row.description.trim() || !row.url.trim()) {
        throw new AppError('renewal_refused', `slice ${req.params.name} needs a description and a url before it can be renewed (PATCH /v1/slices/${req.params.name})`);
      }
      if (until.getTime() <= Date.now()) throw new AppError('renewal_refused', 'body.expires_at must be in the future');
      const limit = Date.now() + ctx.config.maxRenewDays * DAY;
      if (!me.admin && until.getTime() > limit) {
        throw new AppError('renewal_refused', `body.expires_at may be at most ${ctx.config.maxRenewDays} days ahead (${new Date(limit).toISOString()}) unless an admin renews`);
      }
      const renewed = await slices.setSliceExpiry(q, req.params.name, until);
      await changes.record(q, { type: 'slice.renewed', slice: req.params.name, data: { expires_at: until.toISOString(), by: me.email } });
      changes.touch(...(await nodesOfSlice(q, req.params.name)));
      return sliceView(q, renewed);
    });
  });

  app.delete('/v1/slices/:name', {
    schema: { tags: ['slices'], summary: 'Delete a slice (pi, admin): every sliver is torn down', security: bearer, params: NameParams, response: answers({ 202: Slice }) },
  }, async (req, reply) => {
    const me = requireUser(req);
    const slice = await withChanges(ctx, async (q, changes) => {
      const row = await loadSlice(q, req.params.name, true);
      await requireSliceRole(q, me, row, ['admin', 'pi'], 'delete');
      const view = await sliceView(q, row);
      if (row.state !== 'deleting') await tearDownSlice(q, changes, req.params.name, 'deleted');
      return { ...view, state: 'deleting' as const };
    });
    return reply.code(202).send(slice);
  });
};
