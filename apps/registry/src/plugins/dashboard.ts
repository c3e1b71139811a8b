// Serves the web dashboard (apps/web's built files) at / on the API's own origin, with a strict
// Content-Security-Policy: scripts, styles and connections only from this origin, no inline script.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';

export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
};

/**
 * Where the built dashboard is: PLANETLITE_WEB_DIR, the release bundle's lib/web beside the
 * registry's one-file program, or apps/web/dist of the monorepo. null when none is built.
 */
export function findDashboardDir(env: NodeJS.ProcessEnv = process.env): string | null {
  const candidates = [
    env.PLANETLITE_WEB_DIR,
    fileURLToPath(new URL('./web', import.meta.url)),
    fileURLToPath(new URL('../../../web/dist', import.meta.url)),
  ];
  for (const dir of candidates) if (dir && existsSync(join(dir, 'index.html'))) return dir;
  return null;
}

interface Asset {
  body: Buffer;
  type: string;
}

/** Every file of the built dashboard, read once at start: it is small and never changes while running. */
function loadAssets(dir: string): Map<string, Asset> {
  const out = new Map<string, Asset>();
  const walk = (sub: string) => {
    for (const e of readdirSync(join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${e.name}` : e.name;
      if (e.isDirectory()) walk(rel);
      else if (TYPES[extname(e.name)] && !e.name.endsWith('.map')) out.set(rel, { body: readFileSync(join(dir, rel)), type: TYPES[extname(e.name)]! });
    }
  };
  walk('');
  return out;
}

function secure(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', DASHBOARD_CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY')
    .header('cross-origin-opener-policy', 'same-origin');
}

export function registerDashboard(app: FastifyInstance, dir: string | null): void {
  const assets = dir ? loadAssets(dir) : new Map<string, Asset>();
  const index = assets.get('index.html');
  app.get('/', { schema: { hide: true } }, async (_req, reply) => {
    if (!index) throw new AppError('not_found', 'the dashboard is not built into this registry: run `npm run build` (apps/web) or set PLANETLITE_WEB_DIR');
    // The page itself is never cached, so a new release's asset names are seen at once.
    return secure(reply).type(index.type).header('cache-control', 'no-cache').send(index.body);
  });
  app.get('/assets/*', { schema: { hide: true, params: Type.Object({ '*': Type.String({ maxLength: 200 }) }) } }, async (req, reply) => {
    const name = (req.params as { '*': string })['*'];
    const asset = assets.get(`assets/${name}`);
    if (!asset) throw new AppError('not_found', `no dashboard asset ${name}`);
    // Asset names carry a hash of their content (apps/web/build.mjs): cache them for good.
    return secure(reply).type(asset.type).header('cache-control', 'public, max-age=31536000, immutable').send(asset.body);
  });
}
