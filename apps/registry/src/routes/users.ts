// Login, users and their ssh keys.
import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { KeyCreate, LoginRequest, SESSION_COOKIE, LoginResponse, SshKey, TokensRevoked, User, UserCreate, LOGIN_BASE_PATTERN } from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import { checkSameOrigin, requireUser } from '../plugins/auth.js';
import { canSeeUser, hasSiteRole } from '../services/authz.js';
import { hashPassword, hashSecret, newSecret, verifyPassword } from '../services/secrets.js';
import { parsePublicKey } from '../services/sshkeys.js';
import { withChanges } from '../services/changes.js';
import * as users from '../repositories/users.js';
import { findSite } from '../repositories/sites.js';
import { answers, bearer, IdParams, NoContent } from './common.js';

// A stored hash to compare against when the email is unknown, so both paths cost one scrypt.
const DUMMY_HASH = hashPassword('not-a-real-password');

/** The session cookie: unreadable by page scripts, sent only over HTTPS and only by this site's own pages. */
function sessionCookie(token: string, maxAgeSeconds: number): string {
  return `${SESSION_COOKIE}=${token}; Path=/; Max-Age=${maxAgeSeconds}; HttpOnly; Secure; SameSite=Strict`;
}

async function loadUser(q: Queryable, id: string): Promise<User> {
  const user = await users.findUser(q, id);
  if (!user) throw new AppError('not_found', `user ${id} not found`);
  return user;
}

export const userRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;

  app.post('/v1/auth/login', {
    schema: { tags: ['auth'], summary: 'Log in with email and password; returns a bearer token, or with cookie: true sets the browser session cookie', body: LoginRequest, response: answers({ 200: LoginResponse }) },
    config: {
      rateLimit: {
        max: ctx.config.loginRateLimitPerMinute,
        timeWindow: '1 minute',
        hook: 'preHandler',
        keyGenerator: (req) => `login|${req.ip}|${String((req.body as { email?: unknown } | undefined)?.email ?? '').toLowerCase()}`,
      },
    },
  }, async (req, reply) => {
    // A browser session: a login form on another site must not log the browser in either.
    if (req.body.cookie) checkSameOrigin(req);
    const found = await users.findUserForLogin(ctx.db, req.body.email);
    const ok = await verifyPassword(req.body.password, found?.passwordHash ?? (await DUMMY_HASH));
    if (!found || !ok) throw new AppError('invalid_credentials', 'email or password is wrong');
    const token = newSecret('user');
    const expires = new Date(Date.now() + ctx.config.tokenTtlSeconds * 1000);
    await users.insertToken(ctx.db, hashSecret(token), found.user.id, expires);
    await users.pruneExpiredTokens(ctx.db, found.user.id);
    if (!req.body.cookie) return { token, expires_at: expires.toISOString(), user: found.user };
    reply.header('set-cookie', sessionCookie(token, ctx.config.tokenTtlSeconds));
    return { expires_at: expires.toISOString(), user: found.user };
  });

  app.post('/v1/auth/logout', {
    schema: { tags: ['auth'], summary: "End the caller's own token or browser session, at once on every replica", security: bearer, response: answers({ 204: NoContent }) },
  }, async (req, reply) => {
    const { tokenHash } = requireUser(req);
    await users.deleteToken(ctx.db, tokenHash);
    await ctx.principals.forget({ token: tokenHash });
    if (req.headers.cookie?.includes(SESSION_COOKIE)) reply.header('set-cookie', sessionCookie('', 0));
    return reply.code(204).send(null);
  });

  app.delete('/v1/users/:id/tokens', {
    schema: {
      tags: ['auth'],
      summary: 'End every token of a user, at once on every replica (admin, or the user themself): they must log in again',
      security: bearer,
      params: IdParams,
      response: answers({ 200: TokensRevoked }),
    },
  }, async (req) => {
    const me = requireUser(req);
    if (!me.admin && me.id !== req.params.id) throw new AppError('forbidden', "only an admin or the user themself may end the user's tokens");
    await loadUser(ctx.db, req.params.id);
    const revoked = await users.deleteUserTokens(ctx.db, req.params.id);
    await ctx.principals.forget({ user: req.params.id });
    return { revoked };
  });

  app.get('/v1/users/me', {
    schema: { tags: ['users'], summary: 'The calling user', security: bearer, response: answers({ 200: User }) },
  }, async (req) => loadUser(ctx.db, requireUser(req).id));

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
    const all = await users.listUsers(ctx.db, req.query.site ?? null);
    return { users: all.filter((u) => canSeeUser(me, u)) };
  });

  app.get('/v1/users/:id', {
    schema: { tags: ['users'], summary: 'One user', security: bearer, params: IdParams, response: answers({ 200: User }) },
  }, async (req) => {
    const me = requireUser(req);
    const user = await loadUser(ctx.db, req.params.id);
    if (!canSeeUser(me, user)) throw new AppError('forbidden', 'you may not see this user');
    return user;
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
      if (!(await findSite(q, b.site))) throw new AppError('not_found', `site ${b.site} not found`);
      if (await users.emailTaken(q, b.email)) throw new AppError('already_exists', `a user with email ${b.email} already exists`);
      return users.insertUser(q, { id: randomUUID(), email: b.email, name: b.name, passwordHash: hash, site: b.site, roles: b.roles });
    });
    return reply.code(201).send(user);
  });

  app.get('/v1/users/:id/keys', {
    schema: { tags: ['users'], summary: "A user's ssh public keys", security: bearer, params: IdParams, response: answers({ 200: Type.Object({ keys: Type.Array(SshKey) }) }) },
  }, async (req) => {
    const me = requireUser(req);
    const user = await loadUser(ctx.db, req.params.id);
    if (!canSeeUser(me, user)) throw new AppError('forbidden', "you may not see this user's keys");
    return { keys: await users.listKeys(ctx.db, req.params.id) };
  });

  app.post('/v1/users/:id/keys', {
    schema: { tags: ['users'], summary: 'Add an OpenSSH public key (that user, admin)', security: bearer, params: IdParams, body: KeyCreate, response: answers({ 201: SshKey }) },
  }, async (req, reply) => {
    const me = requireUser(req);
    if (!me.admin && me.id !== req.params.id) throw new AppError('forbidden', 'only the user or an admin may add their keys');
    const key = parsePublicKey(req.body.key);
    const added = await withChanges(ctx, async (q, changes) => {
      await loadUser(q, req.params.id);
      if (await users.keyRegistered(q, req.params.id, key.fingerprint)) throw new AppError('already_exists', `key ${key.fingerprint} is already registered for this user`);
      const row = await users.insertKey(q, { id: randomUUID(), userId: req.params.id, ...key });
      changes.touchAfterCommit((db) => users.nodesOfMember(db, req.params.id));
      return row;
    });
    return reply.code(201).send(added);
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
      if (!(await users.deleteKey(q, req.params.id, req.params.key_id))) throw new AppError('not_found', `key ${req.params.key_id} not found`);
      changes.touchAfterCommit((db) => users.nodesOfMember(db, req.params.id));
    });
    return reply.code(204).send(null);
  });
};
