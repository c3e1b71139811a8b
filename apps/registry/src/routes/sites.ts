// Sites and the one-time enrollment tokens their admins hand to new nodes.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { EnrollmentToken, EnrollmentTokenCreate, Site, SiteCreate, SitePatch, LOGIN_BASE_PATTERN } from '@planetlite/api';
import { hasSiteRole, requireAdmin, requireUser } from '../plugins/auth.js';
import { toSite } from '../services/mappers.js';
import { hashSecret, newSecret } from '../services/secrets.js';
import { answers, bearer } from './common.js';

const SiteParams = Type.Object({ login_base: Type.String({ pattern: LOGIN_BASE_PATTERN }) });

export const siteRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/sites', {
    schema: { tags: ['sites'], summary: 'Create a site (admin)', security: bearer, body: SiteCreate, response: answers({ 201: Site }) },
  }, async (req, reply) => {
    requireAdmin(req);
    const b = req.body;
    const { rows } = await ctx.db.query(
      `INSERT INTO sites (login_base, name, max_slices, max_slivers) VALUES ($1, $2, $3, $4)
       ON CONFLICT (login_base) DO NOTHING RETURNING *`,
      [b.login_base, b.name, b.max_slices, b.max_slivers],
    );
    if (!rows[0]) throw new AppError('already_exists', `site ${b.login_base} already exists`);
    return reply.code(201).send(toSite(rows[0]));
  });

  app.get('/v1/sites', {
    schema: { tags: ['sites'], summary: 'All sites', security: bearer, response: answers({ 200: Type.Object({ sites: Type.Array(Site) }) }) },
  }, async (req) => {
    requireUser(req);
    const { rows } = await ctx.db.query('SELECT * FROM sites ORDER BY login_base');
    return { sites: rows.map(toSite) };
  });

  app.get('/v1/sites/:login_base', {
    schema: { tags: ['sites'], summary: 'One site', security: bearer, params: SiteParams, response: answers({ 200: Site }) },
  }, async (req) => {
    requireUser(req);
    const { rows } = await ctx.db.query('SELECT * FROM sites WHERE login_base = $1', [req.params.login_base]);
    if (!rows[0]) throw new AppError('not_found', `site ${req.params.login_base} not found`);
    return toSite(rows[0]);
  });

  app.patch('/v1/sites/:login_base', {
    schema: { tags: ['sites'], summary: "Change a site's name, quotas or enabled flag (admin)", security: bearer, params: SiteParams, body: SitePatch, response: answers({ 200: Site }) },
  }, async (req) => {
    requireAdmin(req);
    const b = req.body;
    const { rows } = await ctx.db.query(
      `UPDATE sites SET name = COALESCE($2, name), max_slices = COALESCE($3, max_slices),
         max_slivers = COALESCE($4, max_slivers), enabled = COALESCE($5, enabled), updated_at = now()
       WHERE login_base = $1 RETURNING *`,
      [req.params.login_base, b.name ?? null, b.max_slices ?? null, b.max_slivers ?? null, b.enabled ?? null],
    );
    if (!rows[0]) throw new AppError('not_found', `site ${req.params.login_base} not found`);
    return toSite(rows[0]);
  });

  app.post('/v1/sites/:login_base/enrollment-tokens', {
    schema: {
      tags: ['nodes'],
      summary: 'A single-use token that enrolls one node into this site (tech, pi, admin)',
      security: bearer,
      params: SiteParams,
      body: Type.Optional(EnrollmentTokenCreate),
      response: answers({ 201: EnrollmentToken }),
    },
  }, async (req, reply) => {
    const me = requireUser(req);
    const site = req.params.login_base;
    if (!hasSiteRole(me, site, 'tech', 'pi')) throw new AppError('forbidden', `only a tech or pi of site ${site}, or an admin, may enroll its nodes`);
    const { rows } = await ctx.db.query('SELECT enabled FROM sites WHERE login_base = $1', [site]);
    if (!rows[0]) throw new AppError('not_found', `site ${site} not found`);
    if (!rows[0].enabled) throw new AppError('forbidden', `site ${site} is disabled`);
    const token = newSecret('enroll');
    const expires = new Date(Date.now() + (req.body?.ttl_seconds ?? 86400) * 1000);
    await ctx.db.query('INSERT INTO enrollment_tokens (token_hash, site, created_by, expires_at) VALUES ($1, $2, $3, $4)', [hashSecret(token), site, me.id, expires]);
    return reply.code(201).send({ token, site, expires_at: expires.toISOString(), registry: ctx.config.publicUrl, ca_pin: ctx.trust.caPin });
  });
};
