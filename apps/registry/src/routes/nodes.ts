// Node enrollment and the node list researchers pick from (images: routes/images.ts).
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { EnrollRequest, EnrollResponse, Node, LOGIN_BASE_PATTERN } from '@planetlite/api';
import { requireUser, requireUserOrNode } from '../plugins/auth.js';
import { toNode } from '../services/mappers.js';
import { hashSecret, newSecret } from '../services/secrets.js';
import { withChanges } from '../services/changes.js';
import { answers, bearer, IdParams } from './common.js';

export const DEFAULT_PORT_WINDOW = { first: 20000, last: 29999 };

export const nodeRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/nodes/enroll', {
    schema: {
      tags: ['nodes'],
      summary: 'Enroll a node with a one-time token; answers the node key. Re-enrolling a hostname of the same site replaces its key.',
      body: EnrollRequest,
      response: answers({ 201: EnrollResponse }),
    },
  }, async (req, reply) => {
    const b = req.body;
    const window = b.port_window ?? DEFAULT_PORT_WINDOW;
    if (window.last - window.first + 1 < ctx.config.portsPerSliver) {
      throw new AppError('invalid_request', `body.port_window must hold at least ${ctx.config.portsPerSliver} ports`);
    }
    const key = newSecret('node');
    const out = await withChanges(ctx, async (q, changes) => {
      const { rows: toks } = await q.query<{ site: string; used_at: unknown; expires_at: Date | string }>(
        'SELECT site, used_at, expires_at FROM enrollment_tokens WHERE token_hash = $1 FOR NO KEY UPDATE',
        [hashSecret(b.token)],
      );
      const tok = toks[0];
      if (!tok) throw new AppError('token_invalid', 'enrollment token is unknown');
      if (tok.used_at) throw new AppError('token_invalid', 'enrollment token was already used');
      if (new Date(tok.expires_at).getTime() <= Date.now()) throw new AppError('token_invalid', 'enrollment token has expired; ask your site admin for a new one');
      const { rows: existing } = await q.query<{ id: string; site: string }>('SELECT id, site FROM nodes WHERE hostname = $1 FOR NO KEY UPDATE', [b.hostname]);
      let nodeId: string;
      const values = [b.address, JSON.stringify(b.capabilities), JSON.stringify(b.resources), window.first, window.last, hashSecret(key)];
      if (existing[0]) {
        if (existing[0].site !== tok.site) throw new AppError('already_exists', `hostname ${b.hostname} is enrolled by another site`);
        nodeId = existing[0].id;
        const { rows: clash } = await q.query(
          'SELECT 1 FROM slivers WHERE node_id = $1 AND (port_first < $2 OR port_last > $3) LIMIT 1',
          [nodeId, window.first, window.last],
        );
        if (clash[0]) throw new AppError('conflict', 'the new port_window does not hold the ports of slivers already on this node');
        await q.query(
          `UPDATE nodes SET address = $2, capabilities = $3, resources = $4, port_first = $5, port_last = $6, key_hash = $7 WHERE id = $1`,
          [nodeId, ...values],
        );
        changes.touch(nodeId);
      } else {
        nodeId = randomUUID();
        await q.query(
          `INSERT INTO nodes (id, site, hostname, address, capabilities, resources, port_first, port_last, key_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
          [nodeId, tok.site, b.hostname, ...values],
        );
      }
      await q.query('UPDATE enrollment_tokens SET used_at = now(), node_id = $2 WHERE token_hash = $1', [hashSecret(b.token), nodeId]);
      await changes.record(q, { type: 'node.enrolled', node: nodeId, data: { hostname: b.hostname, site: tok.site, address: b.address, reenrolled: Boolean(existing[0]) } });
      return { node_id: nodeId, node_key: key };
    });
    return reply.code(201).send(out);
  });

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
    const { rows } = await ctx.db.query('SELECT * FROM nodes WHERE ($1::text IS NULL OR site = $1) ORDER BY hostname', [req.query.site ?? null]);
    return { nodes: rows.map(toNode) };
  });

  app.get('/v1/nodes/:id', {
    schema: { tags: ['nodes'], summary: 'One node (users, and the node itself)', security: bearer, params: IdParams, response: answers({ 200: Node }) },
  }, async (req) => {
    requireUserOrNode(req, req.params.id);
    const { rows } = await ctx.db.query('SELECT * FROM nodes WHERE id = $1', [req.params.id]);
    if (!rows[0]) throw new AppError('not_found', `node ${req.params.id} not found`);
    return toNode(rows[0]);
  });
};
