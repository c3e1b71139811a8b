// Slices: create, read, renew, members, delete.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { MemberAdd, Slice, SliceCreate, SlicePatch, SliceRenew, LOGIN_BASE_PATTERN } from '@planetlite/api';
import { hasSiteRole, requireUser } from '../plugins/auth.js';
import { toSlice, type Row } from '../services/mappers.js';
import { withChanges } from '../services/changes.js';
import { loadSlice, requireImageServes, requireSliceRole, siteOfSlice, sliceView, tearDownSlice } from '../services/slices.js';
import { answers, bearer, NameParams } from './common.js';
import type { Queryable } from '@planetlite/db';

const DEFAULT_RESOURCES = { memory_mb: 512, cpu_shares: 1024, disk_mb: 2048, net_kbps: 10000 };
const DAY = 86400_000;

async function nodesOfSlice(q: Queryable, name: string): Promise<string[]> {
  const { rows } = await q.query<{ node_id: string }>('SELECT node_id FROM slivers WHERE slice = $1', [name]);
  return rows.map((r) => r.node_id);
}

export const sliceRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/slices', {
    schema: { tags: ['slices'], summary: 'Create a slice (pi of its site, admin); the creator becomes a member', security: bearer, body: SliceCreate, response: answers({ 201: Slice }) },
  }, async (req, reply) => {
    const me = requireUser(req);
    const b = req.body;
    const site = siteOfSlice(b.name);
    const kind = b.kind ?? 'lxc';
    const slice = await withChanges(ctx, async (q, changes) => {
      const { rows: sites } = await q.query('SELECT * FROM sites WHERE login_base = $1', [site]);
      const s = sites[0];
      if (!s) {
        if (!me.admin) throw new AppError('forbidden', `only a pi of site ${site} may create slices named ${site}_…`);
        throw new AppError('not_found', `site ${site} not found (a slice name starts with its site's login_base)`);
      }
      if (!hasSiteRole(me, site, 'pi')) throw new AppError('forbidden', `only a pi of site ${site}, or an admin, may create its slices`);
      if (!s.enabled) throw new AppError('forbidden', `site ${site} is disabled`);
      await requireImageServes(q, b.image ?? ctx.config.defaultImage, kind);
      const expires = new Date(Date.now() + ctx.config.sliceLifetimeDays * DAY);
      const resources = { ...DEFAULT_RESOURCES, ...b.resources };
      const { rows } = await q.query(
        `INSERT INTO slices (name, site, description, url, kind, image, resources, expires_at, created_by, memory_reset)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING RETURNING *`,
        [b.name, site, b.description, b.url, kind, b.image ?? ctx.config.defaultImage, JSON.stringify(resources), expires, me.id, b.memory_reset ?? 'restart'],
      );
      if (!rows[0]) {
        const { rows: existing } = await q.query<{ state: string }>('SELECT state FROM slices WHERE name = $1', [b.name]);
        if (existing[0]?.state === 'deleting') throw new AppError('slice_deleting', `slice ${b.name} is still being deleted; try again when its slivers are gone`);
        throw new AppError('already_exists', `slice ${b.name} already exists`);
      }
      await q.query('INSERT INTO slice_members (slice, user_id) VALUES ($1, $2)', [b.name, me.id]);
      await changes.record(q, { type: 'slice.created', slice: b.name, data: { by: me.email, kind, expires_at: expires.toISOString() } });
      // The quota check comes last: the site lock then serialises only this count and the commit.
      await q.query('SELECT 1 FROM sites WHERE login_base = $1 FOR NO KEY UPDATE', [site]);
      const { rows: count } = await q.query<{ n: number }>("SELECT count(*)::int AS n FROM slices WHERE site = $1 AND state = 'active'", [site]);
      if ((count[0]?.n ?? 0) > (s.max_slices as number)) {
        throw new AppError('slice_quota_exceeded', `site ${site} may have at most ${s.max_slices as number} slices`);
      }
      return toSlice(rows[0], [{ id: me.id, email: me.email, name: me.name }]);
    });
    return reply.code(201).send(slice);
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
    const piSite = me.roles.includes('pi') ? me.site : null;
    const { rows } = await ctx.db.query(
      `SELECT * FROM slices sl WHERE ($1::text IS NULL OR sl.site = $1)
         AND ($2 OR sl.site = $3 OR EXISTS (SELECT 1 FROM slice_members m WHERE m.slice = sl.name AND m.user_id = $4))
       ORDER BY sl.name`,
      [req.query.site ?? null, me.admin, piSite, me.id],
    );
    const names = rows.map((r) => r.name as string);
    const { rows: members } = await ctx.db.query<{ slice: string; id: string; email: string; name: string }>(
      'SELECT m.slice, u.id, u.email, u.name FROM slice_members m JOIN users u ON u.id = m.user_id WHERE m.slice = ANY($1) ORDER BY u.email',
      [names],
    );
    return {
      slices: rows.map((r: Row) => toSlice(r, members.filter((m) => m.slice === r.name).map(({ id, email, name }) => ({ id, email, name })))),
    };
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
      const merged = resources ? { ...(row.resources as object), ...resources } : null;
      const { rows } = await q.query(
        `UPDATE slices SET description = COALESCE($2, description), url = COALESCE($3, url), resources = COALESCE($4::jsonb, resources),
           memory_reset = COALESCE($5, memory_reset) WHERE name = $1 RETURNING *`,
        [req.params.name, req.body.description ?? null, req.body.url ?? null, merged ? JSON.stringify(merged) : null, req.body.memory_reset ?? null],
      );
      if (req.body.memory_reset && req.body.memory_reset !== row.memory_reset) changes.touch(...(await nodesOfSlice(q, req.params.name)));
      if (merged) {
        await changes.record(q, { type: 'slice.resources_changed', slice: req.params.name, data: { by: me.email, resources: merged } });
        changes.touch(...(await nodesOfSlice(q, req.params.name)));
      }
      return sliceView(q, rows[0]!);
    });
  });

  app.post('/v1/slices/:name/members', {
    schema: { tags: ['slices'], summary: 'Add a member (pi, admin)', security: bearer, params: NameParams, body: MemberAdd, response: answers({ 200: Slice }) },
  }, async (req) => {
    const me = requireUser(req);
    return withChanges(ctx, async (q, changes) => {
      const row = await loadSlice(q, req.params.name, true);
      await requireSliceRole(q, me, row, ['admin', 'pi'], 'add members to');
      const { rows: users } = await q.query('SELECT 1 FROM users WHERE id = $1', [req.body.user_id]);
      if (!users[0]) throw new AppError('not_found', `user ${req.body.user_id} not found`);
      const { rowCount } = await q.query('INSERT INTO slice_members (slice, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING', [req.params.name, req.body.user_id]);
      if (rowCount) {
        await changes.record(q, { type: 'slice.member_added', slice: req.params.name, data: { user_id: req.body.user_id, by: me.email } });
        changes.touch(...(await nodesOfSlice(q, req.params.name)));
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
      const { rowCount } = await q.query('DELETE FROM slice_members WHERE slice = $1 AND user_id = $2', [req.params.name, req.params.user_id]);
      if (!rowCount) throw new AppError('not_found', `user ${req.params.user_id} is not a member of ${req.params.name}`);
      await changes.record(q, { type: 'slice.member_removed', slice: req.params.name, data: { user_id: req.params.user_id, by: me.email } });
      changes.touch(...(await nodesOfSlice(q, req.params.name)));
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
      if (!String(row.description).trim() || !String(row.url).trim()) {
        throw new AppError('renewal_refused', `slice ${req.params.name} needs a description and a url before it can be renewed (PATCH /v1/slices/${req.params.name})`);
      }
      if (until.getTime() <= Date.now()) throw new AppError('renewal_refused', 'body.expires_at must be in the future');
      const limit = Date.now() + ctx.config.maxRenewDays * DAY;
      if (!me.admin && until.getTime() > limit) {
        throw new AppError('renewal_refused', `body.expires_at may be at most ${ctx.config.maxRenewDays} days ahead (${new Date(limit).toISOString()}) unless an admin renews`);
      }
      const { rows } = await q.query('UPDATE slices SET expires_at = $2 WHERE name = $1 RETURNING *', [req.params.name, until]);
      await changes.record(q, { type: 'slice.renewed', slice: req.params.name, data: { expires_at: until.toISOString(), by: me.email } });
      changes.touch(...(await nodesOfSlice(q, req.params.name)));
      return sliceView(q, rows[0]!);
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
