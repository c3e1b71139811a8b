// Node enrollment and the node list researchers pick from (images: routes/images.ts).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { EnrollRequest, EnrollResponse, Node, LOGIN_BASE_PATTERN } from '@planetlite/api';
import { requireUser, requireUserOrNode } from '../plugins/auth.js';
import { findNode, listNodes } from '../repositories/nodes.js';
import { enrollNode } from '../services/enrollment.js';
import { answers, bearer, IdParams } from './common.js';

export const nodeRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/nodes/enroll', {
    schema: {
      tags: ['nodes'],
      summary: 'Enroll a node with a one-time token; answers the node key. Re-enrolling a hostname of the same site replaces its key.',
      body: EnrollRequest,
      response: answers({ 201: EnrollResponse }),
    },
  }, async (req, reply) => reply.code(201).send(await enrollNode(ctx, req.body, ctx.config.portsPerSliver)));

  app.get('/v1/nodes', {
    schema: {
      tags: ['nodes'],
      summary: 'All nodes',
      security: bearer,
      querystring: Type.Object({ site: Type.Optional(Type.String({ pattern: LOGIN_BASE_PATTERN })) }, { additionalProperties: false }),
      response: answers({ 200: Type.Object({ nodes: Type.Array(Node) }) }),
    },
  }, async (req) => {
    requireUser(req);
    return { nodes: await listNodes(ctx.db, req.query.site ?? null) };
  });

  app.get('/v1/nodes/:id', {
    schema: { tags: ['nodes'], summary: 'One node (users, and the node itself)', security: bearer, params: IdParams, response: answers({ 200: Node }) },
  }, async (req) => {
    requireUserOrNode(req, req.params.id);
    const node = await findNode(ctx.db, req.params.id);
    if (!node) throw new AppError('not_found', `node ${req.params.id} not found`);
    return node;
  });
};
