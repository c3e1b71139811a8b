// Sites and the one-time enrollment tokens their admins hand to new nodes.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { EnrollmentToken, EnrollmentTokenCreate, EnrollmentTokenInfo, Site, SiteCreate, SitePatch, LOGIN_BASE_PATTERN } from '@planetlite/api';
import { requireAdmin, requireUser } from '../plugins/auth.js';
import { insertSite, findSite, listSites, patchSite } from '../repositories/sites.js';
import { issueEnrollmentToken, requireSiteTech } from '../services/enrollment.js';
import { deleteUnusedEnrollmentToken, unusedEnrollmentTokens } from '../repositories/enrollment.js';
import { answers, bearer, NoContent } from './common.js';

export const SiteParams = Type.Object({ login_base: Type.String({ pattern: LOGIN_BASE_PATTERN }) });

export const siteRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/sites', {
    schema: { tags: ['sites'], summary: 'Create a site (admin)', security: bearer, body: SiteCreate, response: answers({ 201: Site }) },
  }, async (req, reply) => {
    requireAdmin(req);
    const site = await insertSite(ctx.db, req.body);
    if (!site) throw new AppError('already_exists', `site ${req.body.login_base} already exists`);
    return reply.code(201).send(site);
  });

  app.get('/v1/sites', {
    schema: { tags: ['sites'], summary: 'All sites', security: bearer, response: answers({ 200: Type.Object({ sites: Type.Array(Site) }) }) },
  }, async (req) => {
    requireUser(req);
    return { sites: await listSites(ctx.db) };
  });

  app.get('/v1/sites/:login_base', {
    schema: { tags: ['sites'], summary: 'One site', security: bearer, params: SiteParams, response: answers({ 200: Site }) },
  }, async (req) => {
    requireUser(req);
    const site = await findSite(ctx.db, req.params.login_base);
    if (!site) throw new AppError('not_found', `site ${req.params.login_base} not found`);
    return site;
  });

  app.patch('/v1/sites/:login_base', {
    schema: { tags: ['sites'], summary: "Change a site's name, quotas or enabled flag (admin)", security: bearer, params: SiteParams, body: SitePatch, response: answers({ 200: Site }) },
  }, async (req) => {
    requireAdmin(req);
    const site = await patchSite(ctx.db, req.params.login_base, req.body);
    if (!site) throw new AppError('not_found', `site ${req.params.login_base} not found`);
    return site;
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
    const answer = await issueEnrollmentToken(ctx.db, requireUser(req), req.params.login_base, req.body?.ttl_seconds ?? 86400);
    return reply.code(201).send({ ...answer, registry: ctx.config.publicUrl, ca_pin: ctx.trust.caPin });
  });

  app.get('/v1/sites/:login_base/enrollment-tokens', {
    schema: {
      tags: ['nodes'],
      summary: "The site's enrollment tokens that can still enroll a node (tech, pi, admin); the secrets themselves are never shown again",
      security: bearer,
      params: SiteParams,
      response: answers({ 200: Type.Object({ tokens: Type.Array(EnrollmentTokenInfo) }) }),
    },
  }, async (req) => {
    requireSiteTech(requireUser(req), req.params.login_base, 'see its enrollment tokens');
    return { tokens: await unusedEnrollmentTokens(ctx.db, req.params.login_base) };
  });

  app.delete('/v1/sites/:login_base/enrollment-tokens/:id', {
    schema: {
      tags: ['nodes'],
      summary: 'Revoke an enrollment token before it is used (tech, pi, admin)',
      security: bearer,
      params: Type.Object({ login_base: Type.String({ pattern: LOGIN_BASE_PATTERN }), id: Type.String({ format: 'uuid' }) }),
      response: answers({ 204: NoContent }),
    },
  }, async (req, reply) => {
    requireSiteTech(requireUser(req), req.params.login_base, 'revoke its enrollment tokens');
    if (!(await deleteUnusedEnrollmentToken(ctx.db, req.params.login_base, req.params.id))) {
      throw new AppError('not_found', `site ${req.params.login_base} has no unused enrollment token ${req.params.id}`);
    }
    return reply.code(204).send(null);
  });
};
