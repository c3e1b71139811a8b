// Who is calling: a user (bearer token from login, or the browser session cookie holding such a
// token) or a node (node key). Routes call the guards.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { CSRF_HEADER, CSRF_HEADER_VALUE, SESSION_COOKIE } from '@planetlite/api';
import { AppError, type ErrorCode } from '@planetlite/core';
import { hashSecret, secretKind } from '../services/secrets.js';
import { userPrincipal, type NodePrincipal, type Principal, type UserPrincipal } from '../services/authz.js';
import { ownerOfToken } from '../repositories/users.js';
import { nodeOfKey } from '../repositories/nodes.js';
import { promoteNodeKey } from '../services/node-lifecycle.js';

export type { NodePrincipal, Principal, UserPrincipal } from '../services/authz.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
    /** Set when a bearer was sent but is unknown, expired or revoked; guards answer 401 with it. */
    authProblem: { code: ErrorCode; detail: string } | null;
  }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The value of one cookie in a Cookie header, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * A state-changing call that rides on the session cookie must show it came from the dashboard:
 * the custom header, which no other site's page can send without a CORS preflight this registry
 * never grants, and an Origin, when the browser sends one, equal to this registry's own. The
 * cookie's SameSite=Strict already keeps it off cross-site requests; these two also cover sibling
 * origins of the same site and browsers without SameSite.
 */
export function checkSameOrigin(req: FastifyRequest): void {
  if (SAFE_METHODS.has(req.method)) return;
  if (req.headers[CSRF_HEADER] !== CSRF_HEADER_VALUE) {
    throw new AppError('cross_site_refused', `a call that changes state with the session cookie must carry the header "X-Requested-With: ${CSRF_HEADER_VALUE}"`);
  }
  const origin = req.headers.origin;
  if (origin === undefined) return;
  let host: string | null = null;
  try {
    host = new URL(origin).host;
  } catch {
    // "null" or garbage: refused below
  }
  if (host !== req.headers.host) throw new AppError('cross_site_refused', `a call from origin ${origin} may not use this registry's session cookie`);
}

export function registerAuth(app: FastifyInstance): void {
  app.decorateRequest('principal', null);
  app.decorateRequest('authProblem', null);
  const { db, nodeDb, principals } = app.ctx;
  /** The user a token's hash stands for (remembered per replica until the token ends). */
  const userOf = (hash: string) =>
    principals.lookup(hash, async () => {
      const u = await ownerOfToken(db, hash);
      return u && { principal: userPrincipal(u, hash), until: new Date(u.expires_at).getTime() };
    });
  app.addHook('onRequest', async (req) => {
    const header = req.headers.authorization;
    if (!header) {
      const session = cookieValue(req.headers.cookie, SESSION_COOKIE);
      if (session === undefined || session === '') return;
      checkSameOrigin(req);
      // Only user tokens ride on the cookie; a node key in it is just an unknown session.
      const u = secretKind(session) === 'user' ? await userOf(hashSecret(session)) : null;
      if (u) req.principal = u;
      else req.authProblem = { code: 'token_invalid', detail: 'the session has ended or expired; log in again' };
      return;
    }
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) {
      req.authProblem = { code: 'token_invalid', detail: 'Authorization header must be "Bearer <token>"' };
      return;
    }
    const secret = m[1] as string;
    const kind = secretKind(secret);
    const hash = hashSecret(secret);
    if (kind === 'user') {
      const u = await userOf(hash);
      if (u) req.principal = u;
      else req.authProblem = { code: 'token_invalid', detail: 'token is unknown, expired or revoked; log in again' };
    } else if (kind === 'node') {
      // Only a key that opens the node is remembered; an unknown or revoked one is looked up each time.
      let problem: { code: ErrorCode; detail: string } = { code: 'token_invalid', detail: 'node key is unknown; enroll the node again' };
      const p = await principals.lookup(hash, async () => {
        const n = await nodeOfKey(nodeDb, hash);
        if (!n) return null;
        if (n.revokedAt) {
          problem = { code: 'node_key_revoked', detail: `the key of node ${n.id} was revoked at ${n.revokedAt}; enroll the node again with a new token from its site` };
          return null;
        }
        if (n.pending) await promoteNodeKey(app.ctx, n.id, hash);
        // An old key in its grace after a rotation is looked up each time: it ends within minutes.
        return { principal: { kind: 'node', id: n.id, site: n.site }, until: n.until, keep: n.until === null };
      });
      if (p) req.principal = p;
      else req.authProblem = problem;
    } else {
      req.authProblem = { code: 'token_invalid', detail: 'token is not a PlanetLite token' };
    }
  });
}

function unauthenticated(req: FastifyRequest): AppError {
  if (req.authProblem) return new AppError(req.authProblem.code, req.authProblem.detail);
  return new AppError('unauthorized', 'this call needs "Authorization: Bearer <token>"; get one from POST /v1/auth/login');
}

export function requireUser(req: FastifyRequest): UserPrincipal {
  const p = req.principal;
  if (!p) throw unauthenticated(req);
  if (p.kind !== 'user') throw new AppError('forbidden', 'node keys may only call their own node\'s paths');
  return p;
}

export function requireAdmin(req: FastifyRequest): UserPrincipal {
  const u = requireUser(req);
  if (!u.admin) throw new AppError('forbidden', 'only an admin may do this');
  return u;
}

/** A user, or the node itself when nodeId is its own id. */
export function requireUserOrNode(req: FastifyRequest, nodeId: string): Principal {
  const p = req.principal;
  if (!p) throw unauthenticated(req);
  if (p.kind === 'node' && p.id !== nodeId) throw new AppError('forbidden', 'a node key only opens its own node\'s paths');
  return p;
}

export function requireNode(req: FastifyRequest, nodeId: string): NodePrincipal {
  const p = req.principal;
  if (!p) throw unauthenticated(req);
  if (p.kind !== 'node') throw new AppError('forbidden', 'only the node itself may call this');
  if (p.id !== nodeId) throw new AppError('forbidden', 'a node key only opens its own node\'s paths');
  return p;
}
