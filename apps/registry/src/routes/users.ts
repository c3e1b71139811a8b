// Login, users and their ssh keys.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { KeyCreate, LoginRequest, LoginResponse, SshKey, User, UserCreate, LOGIN_BASE_PATTERN } from '@planetlite/api';
import { hasSiteRole, requireUser, type UserPrincipal } from '../plugins/auth.js';
import { hashPassword, hashSecret, newSecret, verifyPassword } from '../services/secrets.js';
import { parsePublicKey } from '../services/sshkeys.js';
import { toKey, toUser, type Row } from '../services/mappers.js';
import { withChanges } from '../services/changes.js';
import { answers, bearer, IdParams, NoContent } from './common.js';
import type { Queryable } from '@planetlite/db';

// A stored hash to compare against when the email is unknown, so both paths cost one scrypt.
const DUMMY_HASH = hashPassword('not-a-real-password');

async function loadUser(q: Queryable, id: string): Promise<Row> {
  const { rows } = await q.query('SELECT * FROM users WHERE id = $1', [id]);
  if (!rows[0]) throw new AppError('not_found', `user ${id} not found`);
  return rows[0];
}

/** Admin, the user themself, or a pi/tech of the user's site may see them. */
function canSeeUser(me: UserPrincipal, user: Row): boolean {
  return me.id === user.id || (user.site != null && hasSiteRole(me, user.site as string, 'pi', 'tech'));
}

/** Nodes whose desired state carries this user's keys. */
async function nodesOfMember(q: Queryable, userId: string): Promise<string[]> {
  const { rows } = await q.query<{ node_id: string }>(
    'SELECT DISTINCT s.node_id FROM slivers s JOIN slice_members m ON m.slice = s.slice WHERE m.user_id = $1',
    [userId],
  );
  return rows.map((r) => r.node_id);
}

export const userRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/auth/login', {
    schema: { tags: ['auth'], summary: 'Log in with email and password; returns a bearer token', body: LoginRequest, response: answers({ 200: LoginResponse }) },
    config: {
      rateLimit: {
        max: ctx.config.loginRateLimitPerMinute,
        timeWindow: '1 minute',
        hook: 'preHandler',
        keyGenerator: (req) => `login|${req.ip}|${String((req.body as { email?: unknown } | undefined)?.email ?? '').toLowerCase()}`,
      },
    },
  }, async (req) => {
    const { rows } = await ctx.db.query('SELECT * FROM users WHERE email = $1', [req.body.email.toLowerCase()]);
    const user = rows[0];
    const ok = await verifyPassword(req.body.password, (user?.password_hash as string | undefined) ?? (await DUMMY_HASH));
    if (!user || !ok) throw new AppError('invalid_credentials', 'email or password is wrong');
    const token = newSecret('user');
    const expires = new Date(Date.now() + ctx.config.tokenTtlSeconds * 1000);
    await ctx.db.query('INSERT INTO auth_tokens (token_hash, user_id, expires_at) VALUES ($1, $2, $3)', [hashSecret(token), user.id, expires]);
    await ctx.db.query('DELETE FROM auth_tokens WHERE user_id = $1 AND expires_at < now()', [user.id]);
    return { token, expires_at: expires.toISOString(), user: toUser(user) };
  });

  app.get('/v1/users/me', {
    schema: { tags: ['users'], summary: 'The calling user', security: bearer, response: answers({ 200: User }) },
  }, async (req) => toUser(await loadUser(ctx.db, requireUser(req).id)));

  app.get('/v1/users', {
    schema: {
      tags: ['users'],
      summary: 'Users the caller may see: all for admins, their site for pi/tech, themself otherwise',
      security: bearer,
      querystring: Type.Object({ site: Type.Optional(Type.String({ pattern: LOGIN_BASE_PATTERN })) }, { additionalProperties: false }),
      response: answers({ 200: Type.Object({ users: Type.Array(User) }) }),
    },
  }, async (req) => {
    const me = requireUser(req);
    const { rows } = await ctx.db.query('SELECT * FROM users WHERE ($1::text IS NULL OR site = $1) ORDER BY email', [req.query.site ?? null]);
    return { users: rows.filter((u) => me.admin || canSeeUser(me, u)).map(toUser) };
  });

  app.get('/v1/users/:id', {
    schema: { tags: ['users'], summary: 'One user', security: bearer, params: IdParams, response: answers({ 200: User }) },
  }, async (req) => {
    const me = requireUser(req);
    const user = await loadUser(ctx.db, req.params.id);
    if (!me.admin && !canSeeUser(me, user)) throw new AppError('forbidden', 'you may not see this user');
    return toUser(user);
  });

  app.post('/v1/users', {
    schema: { tags: ['users'], summary: 'Create a user (admin, or pi of that site)', security: bearer, body: UserCreate, response: answers({ 201: User }) },
  }, async (req, reply) => {
    const me = requireUser(req);
    const b = req.body;
    if (!hasSiteRole(me, b.site, 'pi')) throw new AppError('forbidden', `only an admin or a pi of site ${b.site} may add its users`);
    if (b.roles.includes('admin') && !me.admin) throw new AppError('forbidden', 'only an admin may grant the admin role');
    const hash = await hashPassword(b.password);
    const user = await ctx.db.transaction(async (q) => {
      const site = await q.query('SELECT 1 FROM sites WHERE login_base = $1', [b.site]);
      if (!site.rows[0]) throw new AppError('not_found', `site ${b.site} not found`);
      const dup = await q.query('SELECT 1 FROM users WHERE email = $1', [b.email.toLowerCase()]);
      if (dup.rows[0]) throw new AppError('already_exists', `a user with email ${b.email} already exists`);
      const { rows } = await q.query(
        'INSERT INTO users (id, email, name, password_hash, site, roles) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
        [randomUUID(), b.email.toLowerCase(), b.name, hash, b.site, b.roles],
      );
      return rows[0]!;
    });
    return reply.code(201).send(toUser(user));
  });

  app.get('/v1/users/:id/keys', {
    schema: { tags: ['users'], summary: "A user's ssh public keys", security: bearer, params: IdParams, response: answers({ 200: Type.Object({ keys: Type.Array(SshKey) }) }) },
  }, async (req) => {
    const me = requireUser(req);
    const user = await loadUser(ctx.db, req.params.id);
    if (!me.admin && !canSeeUser(me, user)) throw new AppError('forbidden', "you may not see this user's keys");
    const { rows } = await ctx.db.query('SELECT * FROM ssh_keys WHERE user_id = $1 ORDER BY created_at, id', [req.params.id]);
    return { keys: rows.map(toKey) };
  });

  app.post('/v1/users/:id/keys', {
    schema: { tags: ['users'], summary: 'Add an OpenSSH public key (that user, admin)', security: bearer, params: IdParams, body: KeyCreate, response: answers({ 201: SshKey }) },
  }, async (req, reply) => {
    const me = requireUser(req);
    if (!me.admin && me.id !== req.params.id) throw new AppError('forbidden', 'only the user or an admin may add their keys');
    const key = parsePublicKey(req.body.key);
    const row = await withChanges(ctx, async (q, changes) => {
      await loadUser(q, req.params.id);
      const dup = await q.query('SELECT 1 FROM ssh_keys WHERE user_id = $1 AND fingerprint = $2', [req.params.id, key.fingerprint]);
      if (dup.rows[0]) throw new AppError('already_exists', `key ${key.fingerprint} is already registered for this user`);
      const { rows } = await q.query(
        'INSERT INTO ssh_keys (id, user_id, type, key, fingerprint, comment) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
        [randomUUID(), req.params.id, key.type, key.key, key.fingerprint, key.comment],
      );
      changes.touch(...(await nodesOfMember(q, req.params.id)));
      return rows[0]!;
    });
    return reply.code(201).send(toKey(row));
  });

  app.delete('/v1/users/:id/keys/:key_id', {
    schema: {
      tags: ['users'],
      summary: 'Remove an ssh key (that user, admin)',
      security: bearer,
      params: Type.Object({ id: Type.String({ format: 'uuid' }), key_id: Type.String({ format: 'uuid' }) }),
      response: answers({ 204: NoContent }),
    },
  }, async (req, reply) => {
    const me = requireUser(req);
    if (!me.admin && me.id !== req.params.id) throw new AppError('forbidden', 'only the user or an admin may remove their keys');
    await withChanges(ctx, async (q, changes) => {
      const { rowCount } = await q.query('DELETE FROM ssh_keys WHERE id = $1 AND user_id = $2', [req.params.key_id, req.params.id]);
      if (!rowCount) throw new AppError('not_found', `key ${req.params.key_id} not found`);
      changes.touch(...(await nodesOfMember(q, req.params.id)));
    });
    return reply.code(204).send(null);
  });
};
