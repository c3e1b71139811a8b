// Builds the registry: connections first, then cross-cutting plugins, then the v1 routes.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import rateLimit from '@fastify/rate-limit';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { AppError, createLogger, type Logger } from '@planetlite/core';
import { laneOf, migrate, openDatabase, type Database } from '@planetlite/db';
import pLimit from 'p-limit';
import { openFanout, type Fanout } from '@planetlite/fanout';
import { Health, CA_PATH } from '@planetlite/api';
import { nodeConnections, type RegistryConfig } from './config.js';
import { Closing, type RegistryContext } from './context.js';
import { errorServerOptions, registerErrorHandling } from './plugins/errors.js';
import { registerInputChecks } from './plugins/input.js';
import { registerAuth } from './plugins/auth.js';
import { registerMetrics } from './plugins/metrics.js';
import { findDashboardDir, registerDashboard } from './plugins/dashboard.js';
import { userRoutes } from './routes/users.js';
import { siteRoutes } from './routes/sites.js';
import { nodeRoutes } from './routes/nodes.js';
import { sliceRoutes } from './routes/slices.js';
import { sliverRoutes } from './routes/slivers.js';
import { eventRoutes } from './routes/events.js';
import { nodeSideRoutes } from './routes/nodeside.js';
import { imageRoutes } from './routes/images.js';
import { answers } from './routes/common.js';
import { ensureAdmin } from './services/bootstrap.js';
import { startSweeps } from './services/sweeps.js';
import { Notifier } from './services/notify.js';
import { PrincipalCache } from './services/principals.js';
import { DocumentCache } from './services/desired-state.js';
import { ReportMemo } from './services/report-memo.js';
import { seenRefreshSecondsOf } from './services/node-reports.js';
import { ImageService } from './services/images.js';
import { loadTls } from './tls.js';

export const VERSION = '0.1.0';

/**
 * Where the registry listens. A fleet reconnects together (after a restart, a replica's fall):
 * thousands of connections arrive within a second, and with Node's default backlog (511) the
 * kernel drops the SYNs beyond it, which each agent then retries only after 1, 3, 7 s. The kernel
 * caps the backlog at net.core.somaxconn (4096 on Debian 12).
 */
export const listenOptions = (config: Pick<RegistryConfig, 'host' | 'port' | 'listenBacklog'>) => ({ host: config.host, port: config.port, backlog: config.listenBacklog });
const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export interface BuildOptions {
  config: RegistryConfig;
  /** Share an open database or fan-out (tests); otherwise opened from config and closed with the app. */
  db?: Database;
  fanout?: Fanout;
  logger?: Logger;
}

/**
 * Bodies are validated strictly (no type coercion, unknown fields refused); path and query
 * strings are coerced, since they only ever arrive as text.
 */
function validators() {
  const common = { allErrors: false, useDefaults: true, removeAdditional: false, strict: false } as const;
  const body = databaseFormats(addFormats(new Ajv({ ...common, coerceTypes: false })));
  const params = databaseFormats(addFormats(new Ajv({ ...common, coerceTypes: 'array' })));
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) => (httpPart === 'body' ? body : params).compile(schema);
}

/**
 * Formats as the database columns take them, stricter than ajv-formats: a uuid in its canonical
 * hyphenated form only (no urn:uuid: prefix, braces or bare hex, and lowercase as the registry
 * hands ids out, so that ids compare equal as text), and an RFC 3339 date-time in years 1 to
 * 9999 that JavaScript and timestamptz both hold.
 */
function databaseFormats(ajv: Ajv): Ajv {
  const dateTime = ajv.formats['date-time'] as { validate: (s: string) => boolean } | undefined;
  ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  ajv.addFormat('date-time', {
    type: 'string',
    validate: (s: string) => /^\d{4}-/.test(s) && !s.startsWith('0000') && (dateTime?.validate(s) ?? true) && Number.isFinite(Date.parse(s)),
  });
  return ajv;
}

export async function buildApp(opts: BuildOptions): Promise<FastifyInstance> {
  const { config } = opts;
  const log = opts.logger ?? createLogger({ name: 'registry', level: config.logLevel });
  const db = opts.db ?? (await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, prepare: config.dbPrepare, poolSize: config.dbPoolSize, logger: log }));
  const fanout = opts.fanout ?? (await openFanout({ redisUrl: config.redisUrl, logger: log }));
  await migrate(db);
  const tls = config.tls.mode === 'off' ? null : await loadTls(config.tls, log);
  const closing = new Closing();
  const principals = new PrincipalCache({ fanout, log, ttlMs: config.authCacheSeconds * 1000 });
  await principals.start();
  const documents = new DocumentCache({ fanout, ttlMs: config.docCacheSeconds * 1000 });
  const nodeDb = laneOf(db, nodeConnections(config));
  const reports = config.docCacheSeconds > 0 ? new ReportMemo({ db: nodeDb, fanout, log, principals, documents, sampleSeconds: config.usageSampleSeconds, seenRefreshSeconds: seenRefreshSecondsOf(config.nodeOfflineAfterSeconds) }) : null;
  await reports?.start();
  const ctx = { config, db, nodeDb, fanout, log, principals, documents, reports, reportWrites: pLimit(config.reportWrites), closing, trust: { ca: tls?.ca ?? null, caPin: tls?.caPin ?? null } } as RegistryContext;
  ctx.notifier = new Notifier(ctx);
  await ensureAdmin(ctx);
  ctx.images = await ImageService.open(ctx);

  const app = Fastify({
    ...(tls ? { https: { key: tls.key, cert: tls.cert } } : {}),
    loggerInstance: log as FastifyBaseLogger,
    bodyLimit: config.bodyLimitBytes,
    // Per-request lines only when debugging: at info a busy registry would log mostly noise.
    logController: new LogController({ disableRequestLogging: config.logLevel !== 'debug' && config.logLevel !== 'trace' }),
    trustProxy: false,
    // Longer than any name or id (the schemas say how long each may be); longer still is a 414.
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, maxParamLength: 500 },
    ...errorServerOptions,
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(validators());
  // A 304 has no body (RFC 9110), whatever a route sends with it. fastify drops the body of a 204
  // but answers a 304 sent `null` with `content-length: 4` and no body; undici, the agent's HTTP
  // client, then drops the connection: a TLS handshake after every long-poll that timed out.
  app.addHook('onSend', (_req, reply, payload, done) => done(null, reply.statusCode === 304 ? null : payload));
  app.decorate('ctx', ctx);
  app.decorate('reloadTls', async () => {
    if (config.tls.mode === 'off') return;
    const next = await loadTls(config.tls, log);
    (app.server as unknown as import('node:tls').Server).setSecureContext({ key: next.key, cert: next.cert });
    ctx.trust = { ca: next.ca, caPin: next.caPin };
    log.info({ sans: next.sans, ca_pin: next.caPin }, 'TLS certificate reloaded');
  });
  if (config.tls.mode === 'own-ca') {
    // Its own server certificate is issued anew 30 days before it expires; look once a day.
    const renew = setInterval(() => void app.reloadTls().catch((err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, 'TLS renewal failed')), 86_400_000);
    renew.unref();
    app.addHook('onClose', async () => clearInterval(renew));
  }
  // Before the server waits for open requests to finish, end the ones that would wait for minutes;
  // whatever connection is still open after a short grace period is cut.
  app.addHook('preClose', async () => {
    closing.close();
    setTimeout(() => app.server.closeAllConnections(), 2000).unref();
  });
  // The seeder announces to this registry's tracker, so it starts once the registry listens (a
  // tick later: startRegistry fills in the public URL of a port-0 listen right after listen()).
  app.server.once('listening', () => setImmediate(() => void ctx.images.startSeeding().catch((err: unknown) => log.error({ err }, 'image seeder did not start'))));
  app.addHook('onClose', async () => {
    await ctx.images.close();
    principals.stop();
    documents.close();
    await reports?.close();
    await ctx.notifier.settled();
    ctx.notifier.close();
    if (!opts.fanout) await fanout.close();
    if (!opts.db) await db.close();
  });
  if (config.sweeps) {
    const stop = startSweeps(ctx);
    app.addHook('onClose', async () => stop());
  }

  registerErrorHandling(app);
  registerInputChecks(app);
  registerAuth(app);
  registerMetrics(app);
  const redis = fanout.redis;
  await app.register(rateLimit, { global: false, ...(redis ? { redis, nameSpace: 'planetlite-ratelimit-' } : {}) });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'PlanetLite registry API', version: VERSION, description: 'Slices, slivers, sites, users and nodes of a PlanetLite testbed. Errors are RFC 9457 problem+json.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'user token from POST /v1/auth/login, or a node key' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/healthz', { schema: { tags: ['health'], summary: 'Liveness and database reachability', response: answers({ 200: Health }) } }, async () => {
    await db.query('SELECT 1');
    return { status: 'ok' as const, database: db.kind, fanout: fanout.kind, version: VERSION };
  });

  app.get(CA_PATH, { schema: { tags: ['health'], summary: "The registry's CA certificate (PEM), for nodes and users to check against their pin" } }, async (_req, reply) => {
    if (!ctx.trust.ca) throw new AppError('not_found', 'this registry has no CA of its own to pin: it serves plain HTTP or a certificate the system CAs trust');
    return reply.type('application/x-pem-file').send(ctx.trust.ca);
  });

  registerDashboard(app, findDashboardDir());
  await app.register(userRoutes);
  await app.register(siteRoutes);
  await app.register(nodeRoutes);
  await app.register(sliceRoutes);
  await app.register(sliverRoutes);
  await app.register(eventRoutes);
  await app.register(nodeSideRoutes);
  await app.register(imageRoutes);
  return app;
}
