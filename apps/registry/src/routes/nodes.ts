// Node enrollment and the node list researchers pick from (images: routes/images.ts).
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { EnrollRequest, EnrollResponse, Node, NodeAction, NodeListQuery, NodePatch } from '@planetlite/api';
import { requireUser, requireUserOrNode } from '../plugins/auth.js';
import { findNode, listNodes } from '../repositories/nodes.js';
import { enrollNode } from '../services/enrollment.js';
import { actOnNode, patchNode, revokeNodeKey } from '../services/node-lifecycle.js';
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
      summary: 'Nodes in service or on their way out (all=true: decommissioned ones too)',
      security: bearer,
      querystring: NodeListQuery,
      response: answers({ 200: Type.Object({ nodes: Type.Array(Node) }) }),
    },
  }, async (req) => {
    requireUser(req);
    return { nodes: await listNodes(ctx.db, req.query.site ?? null, req.query.all ?? false) };
  });

  app.get('/v1/nodes/:id', {
    schema: { tags: ['nodes'], summary: 'One node (users, and the node itself)', security: bearer, params: IdParams, response: answers({ 200: Node }) },
  }, async (req) => {
    requireUserOrNode(req, req.params.id);
    const node = await findNode(ctx.db, req.params.id);
    if (!node) throw new AppError('not_found', `node ${req.params.id} not found`);
    return node;
  });

  app.patch('/v1/nodes/:id', {
    schema: {
      tags: ['nodes'],
      summary: "Set where a node stands, {location: {city, latitude, longitude}}, or clear it with {location: null} (its site's tech or pi, admin); answers the node",
      security: bearer,
      params: IdParams,
      body: NodePatch,
      response: answers({ 200: Node }),
    },
  }, async (req) => patchNode(ctx, requireUser(req), req.params.id, req.body));

  app.post('/v1/nodes/:id/actions', {
    schema: {
      tags: ['nodes'],
      summary: "drain (no new slivers; existing ones keep running), undrain, or decommission (slivers torn down, then its key revoked; " +
        "the record stays) a node (its site's tech or pi, admin). Answers the node: 200, or 202 for decommission, which completes when the node confirms its slivers gone " +
        '(force: true, for an offline node that will not come back, forgets them at once).',
      security: bearer,
      params: IdParams,
      body: NodeAction,
      response: answers({ 200: Node, 202: Node }),
    },
  }, async (req, reply) => {
    const node = await actOnNode(ctx, requireUser(req), req.params.id, req.body.action, req.body.force ?? false);
    return reply.code(req.body.action === 'decommission' ? 202 : 200).send(node);
  });

  app.delete('/v1/nodes/:id/key', {
    schema: {
      tags: ['nodes'],
      summary: "Revoke the node's key at once, on every replica (its site's tech or pi, admin); the node must enroll again",
      security: bearer,
      params: IdParams,
      response: answers({ 200: Node }),
    },
  }, async (req) => revokeNodeKey(ctx, requireUser(req), req.params.id));
};
