// Registry configuration: command-line flags and environment, checked once at start.
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { NotifyConfig } from './services/notify.js';
import type { TlsConfig } from './tls.js';

export interface RegistryConfig {
  host: string;
  port: number;
  /** Connections the kernel holds for this replica to accept (PLANETLITE_LISTEN_BACKLOG). */
  listenBacklog: number;
  /** PGlite's home when no databaseUrl; absent too: in memory (tests only). */
  dataDir: string | undefined;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  adminEmail: string | undefined;
  adminPassword: string | undefined;
  /** URL under which nodes and users reach this registry (web seed links); default from listen. */
  publicUrl: string;
  /** HTTPS: the registry's own CA (default), an operator's certificate, or off (loopback only). */
  tls: TlsConfig;
  logLevel: string;
  defaultImage: string;
  sliceLifetimeDays: number;
  maxRenewDays: number;
  portsPerSliver: number;
  tokenTtlSeconds: number;
  /** How long a replica answers for a token or node key from memory at most (0: never); ended ones are forgotten at once. */
  authCacheSeconds: number;
  /** How long a replica answers a node's poll with 'unchanged' from memory at most (0: never); a change to its document ends that at once. */
  docCacheSeconds: number;
  /** Prepare each SQL statement once per PostgreSQL connection (PLANETLITE_DB_PREPARE). */
  dbPrepare: boolean;
  /** PostgreSQL connections this replica opens at most (PLANETLITE_DB_POOL_SIZE). */
  dbPoolSize: number;
  /** Observed-state reports this replica writes at once at most; more wait their turn, so a
   * burst of them never holds every database connection (PLANETLITE_REPORT_WRITES). */
  reportWrites: number;
  loginRateLimitPerMinute: number;
  longPollMaxSeconds: number;
  nodeOfflineAfterSeconds: number;
  bodyLimitBytes: number;
  /** A sliver's usage history gets a sample when its last one is about this old (reports come every 30 s). */
  usageSampleSeconds: number;
  /** Usage samples older than this are pruned; the history endpoint promises at least 24 h. */
  usageRetentionHours: number;
  /** How slice members hear of a watchdog reset (webhook, SMTP relay); both may be off. */
  notify: NotifyConfig;
  /** Run the expiry, node-liveness and usage-retention sweeps on a schedule (off in most tests). */
  sweeps: boolean;
  /**
   * Where uploaded image archives live (one file per sha256). Absent: <dataDir>/images, or without
   * a dataDir a temporary directory made at start and removed at close (tests).
   */
  imagesDir: string | undefined;
  /** Largest image archive POST /v1/images takes. */
  maxImageBytes: number;
  /** The image seeder's BitTorrent TCP port; 0 picks a free one. */
  torrentPort: number;
  /** Upload cap of the image seeder, kbit/s; undefined: no cap. */
  seedUploadKbps: number | undefined;
  /** The seeder serves a piece to one node at a time for this long (services/superseed.ts); 0: off. */
  superSeedMs: number;
}

export interface ConfigInput {
  listen?: string;
  dataDir?: string;
  databaseUrl?: string;
  redisUrl?: string;
  adminEmail?: string;
  adminPassword?: string;
  publicUrl?: string;
  logLevel?: string;
  sweeps?: boolean;
  /** Serve plain HTTP (only on a loopback listen address: a reverse proxy in front terminates TLS). */
  plainHttp?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /** Extra names and addresses for the registry's own server certificate. */
  tlsSans?: string[];
  /** Settings a test sets directly (after the schema's checks). */
  overrides?: Partial<RegistryConfig>;
}

export class ConfigError extends Error {}

/** Connections nodes' requests may hold at once: the pool less a fifth of it (at least 2), which
 * users' requests always find free however many nodes poll and report. */
export function nodeConnections(config: Pick<RegistryConfig, 'dbPoolSize'>): number {
  return config.dbPoolSize - Math.max(2, Math.ceil(config.dbPoolSize / 5));
}

/** What an integer setting holds, for the schema and the error that names it. */
const int = (def: number, min: number, max: number, description: string) => Type.Integer({ default: def, minimum: min, maximum: max, description });
const url = (schemes: string, expect: string, description: string) => Type.Optional(Type.String({ pattern: `^(${schemes})://[^/\\s]+`, expect, description }));

/**
 * Every environment variable the registry reads, with its type, range, default and meaning: the
 * one place they are declared. `serve --help` lists them from here; flags set the same names.
 */
export const RegistryEnv = Type.Object({
  PLANETLITE_LISTEN: Type.String({ default: '127.0.0.1:8080', description: 'HOST:PORT to listen on (--listen)' }),
  PLANETLITE_LISTEN_BACKLOG: int(4096, 1, 65535, 'connections the kernel holds for the registry to accept; a fleet that reconnects at once needs one per agent of this replica (the kernel caps it at net.core.somaxconn)'),
  PLANETLITE_DATA_DIR: Type.Optional(Type.String({ minLength: 1, description: 'embedded database and the registry CA (--data-dir)' })),
  DATABASE_URL: url('postgres|postgresql', 'a postgres:// URL', 'PostgreSQL server; absent: embedded PGlite under the data dir'),
  REDIS_URL: url('redis|rediss', 'a redis:// URL', 'carries change notifications between replicas; absent: in-process (one replica)'),
  PLANETLITE_ADMIN_EMAIL: Type.Optional(Type.String({ minLength: 3, description: 'on first start against an empty database, create this admin' })),
  PLANETLITE_ADMIN_PASSWORD: Type.Optional(Type.String({ minLength: 8, expect: 'at least 8 characters', secret: true, description: '… with this password' })),
  PLANETLITE_PUBLIC_URL: url('https|http', 'an http(s):// URL', 'URL nodes and users reach this registry at (default https://HOST:PORT of --listen)'),
  PLANETLITE_DEFAULT_IMAGE: Type.String({ default: 'debian12', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$', description: 'image of slices that name none' }),
  PLANETLITE_LOG_LEVEL: Type.Union(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].map((l) => Type.Literal(l)), { default: 'info', expect: 'one of trace, debug, info, warn, error', description: 'log level; debug also logs every request' }),
  PLANETLITE_PLAIN_HTTP: Type.Boolean({ default: false, description: 'serve plain HTTP, only on a loopback --listen (--plain-http)' }),
  PLANETLITE_TLS_CERT: Type.Optional(Type.String({ minLength: 1, description: "an operator's certificate chain, PEM (--tls-cert)" })),
  PLANETLITE_TLS_KEY: Type.Optional(Type.String({ minLength: 1, description: 'its private key, PEM (--tls-key)' })),
  PLANETLITE_TLS_CA: Type.Optional(Type.String({ minLength: 1, description: 'the CA nodes and users pin with --tls-cert (--tls-ca)' })),
  PLANETLITE_TLS_SANS: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9.:*\\[\\], -]*$', expect: 'host names or IP addresses separated by commas', description: "more names for the registry's own certificate (--tls-san)" })),
  PLANETLITE_SLICE_LIFETIME_DAYS: int(14, 1, 365, 'days a new slice lives before it must be renewed'),
  PLANETLITE_MAX_RENEW_DAYS: int(56, 1, 3650, 'how far ahead a renewal may reach (admins: any)'),
  PLANETLITE_PORTS_PER_SLIVER: int(10, 1, 1000, 'forwarded ports per sliver'),
  PLANETLITE_TOKEN_TTL_SECONDS: int(86400, 60, 90 * 86400, 'lifetime of a login token'),
  PLANETLITE_DB_PREPARE: Type.Boolean({ default: true, description: 'prepare each SQL statement once per PostgreSQL connection; false behind a pooler that cannot keep prepared statements (PgBouncer in transaction mode before 1.21)' }),
  PLANETLITE_DB_POOL_SIZE: int(20, 3, 1000, "PostgreSQL connections this replica opens at most; nodes' requests hold at most all but a fifth of them (at least 2), which users' requests always find free"),
  PLANETLITE_REPORT_WRITES: int(4, 1, 999, "nodes' reports this replica writes at once; more wait their turn, so that a burst of them (a fleet coming back) never takes every connection from the API (at most the connections nodes may hold)"),
  PLANETLITE_AUTH_CACHE_SECONDS: int(120, 0, 3600, 'longest a replica answers for a token or node key from memory, each between half of it and all of it (ended ones are forgotten on every replica at once; 0: look every one up)'),
  PLANETLITE_DOC_CACHE_SECONDS: int(120, 0, 3600, "longest a replica answers a node's poll with 'unchanged' from memory unchecked (a change to its document, or Redis down, ends that at once); it also lets a replica take a report that says nothing new without a statement of its own (0: build the document on every poll and write every report)"),
  PLANETLITE_LOGIN_RATE_LIMIT: int(10, 1, 100000, 'logins per minute per address and email'),
  PLANETLITE_LONG_POLL_MAX_SECONDS: int(60, 1, 300, "longest desired-state long-poll"),
  PLANETLITE_NODE_OFFLINE_AFTER_SECONDS: int(150, 10, 86400, 'a silent node is marked offline after this long'),
  PLANETLITE_BODY_LIMIT_BYTES: int(256 * 1024, 1024, 64 * 1024 * 1024, 'largest JSON body'),
  PLANETLITE_USAGE_SAMPLE_SECONDS: int(60, 10, 3600, 'one accounting sample per sliver per interval'),
  PLANETLITE_USAGE_RETENTION_HOURS: int(48, 24, 24 * 366, 'how long usage samples are kept'),
  PLANETLITE_NOTIFY_WEBHOOK: url('https|http', 'an http(s):// URL', 'gets a JSON POST when the watchdog resets a sliver'),
  PLANETLITE_SMTP_URL: url('smtp|smtps', 'like smtp://host:25 or smtps://user:pass@host:465', 'relay that mails slice members about it'),
  PLANETLITE_MAIL_FROM: Type.Optional(Type.String({ minLength: 3, description: 'sender of those mails' })),
  PLANETLITE_IMAGES_DIR: Type.Optional(Type.String({ minLength: 1, description: 'where image archives are kept (default DATA_DIR/images); replicas share it' })),
  PLANETLITE_MAX_IMAGE_BYTES: int(8 * 1024 ** 3, 1, 2 ** 50, 'largest image upload'),
  PLANETLITE_TORRENT_PORT: int(0, 0, 65535, "the image seeder's BitTorrent port (0: any)"),
  PLANETLITE_SEED_UPLOAD_KBPS: Type.Optional(Type.Integer({ minimum: 8, maximum: 100_000_000, description: 'cap on what the seeder and web seed send, kbit/s (default: none)' })),
  PLANETLITE_SUPERSEED_SECONDS: int(15, 0, 3600, 'a piece sent to one node is refused to others this long (0: off)'),
});
export type RegistryEnv = Static<typeof RegistryEnv>;

/** Which flag sets an environment variable, for errors about a value that came from the flag. */
const FLAG_OF: Partial<Record<keyof RegistryEnv, string>> = {
  PLANETLITE_LISTEN: '--listen',
  PLANETLITE_DATA_DIR: '--data-dir',
  PLANETLITE_PLAIN_HTTP: '--plain-http',
  PLANETLITE_TLS_CERT: '--tls-cert',
  PLANETLITE_TLS_KEY: '--tls-key',
  PLANETLITE_TLS_CA: '--tls-ca',
  PLANETLITE_TLS_SANS: '--tls-san',
};

/** The environment help of `serve` and `migrate`, from the schema. */
export function envHelp(): string {
  const lines = ['Environment (flags set the same settings):'];
  for (const [name, schema] of Object.entries(RegistryEnv.properties) as [string, { default?: unknown; minimum?: number; maximum?: number; description?: string }][]) {
    const range = schema.minimum !== undefined ? ` ${schema.minimum}-${schema.maximum}` : '';
    const def = schema.default !== undefined && schema.default !== '' ? ` (default ${String(schema.default)}${range ? `;${range}` : ''})` : range ? ` (${range.trim()})` : '';
    lines.push(`  ${name}${def}`, `      ${schema.description ?? ''}`);
  }
  return lines.join('\n');
}

/** Settings from flags (input) over the environment, converted, defaulted and checked against the schema. */
function readEnv(input: ConfigInput, env: NodeJS.ProcessEnv): RegistryEnv {
  const raw: Record<string, unknown> = {};
  for (const name of Object.keys(RegistryEnv.properties)) if (env[name] !== undefined && env[name] !== '') raw[name] = env[name];
  const fromFlag = new Set<string>();
  const flag = (name: keyof RegistryEnv, v: unknown) => {
    if (v === undefined) return;
    raw[name] = v;
    fromFlag.add(name);
  };
  flag('PLANETLITE_LISTEN', input.listen);
  flag('PLANETLITE_DATA_DIR', input.dataDir);
  flag('DATABASE_URL', input.databaseUrl);
  flag('REDIS_URL', input.redisUrl);
  flag('PLANETLITE_ADMIN_EMAIL', input.adminEmail);
  flag('PLANETLITE_ADMIN_PASSWORD', input.adminPassword);
  flag('PLANETLITE_PUBLIC_URL', input.publicUrl);
  flag('PLANETLITE_LOG_LEVEL', input.logLevel);
  flag('PLANETLITE_PLAIN_HTTP', input.plainHttp);
  flag('PLANETLITE_TLS_CERT', input.tlsCert);
  flag('PLANETLITE_TLS_KEY', input.tlsKey);
  flag('PLANETLITE_TLS_CA', input.tlsCa);
  flag('PLANETLITE_TLS_SANS', input.tlsSans?.join(','));
  const given = { ...raw };
  // Text from the environment becomes what the schema wants: whole numbers and yes/no.
  for (const [name, schema] of Object.entries(RegistryEnv.properties) as [string, { type?: string }][]) {
    const v = raw[name];
    if (typeof v !== 'string') continue;
    if (schema.type === 'integer' && /^-?\d+$/.test(v.trim())) raw[name] = Number(v.trim());
    if (schema.type === 'boolean' && /^(1|true|yes|on|0|false|no|off)$/i.test(v.trim())) raw[name] = /^(1|true|yes|on)$/i.test(v.trim());
  }
  const value = Value.Default(RegistryEnv, raw);
  const error = Value.Errors(RegistryEnv, value).First();
  if (error) {
    const name = error.path.replace(/^\//, '').split('/')[0] as keyof RegistryEnv;
    const schema = RegistryEnv.properties[name] as { type?: string; minimum?: number; maximum?: number; expect?: string; secret?: boolean };
    const shown = schema.secret ? '…' : String(given[name] ?? '').replace(/^([a-z][a-z0-9+.-]*:\/*)[^@]*@/i, '$1…@');
    const expect = schema.expect ?? (schema.type === 'integer' ? `an integer from ${schema.minimum} to ${schema.maximum}` : schema.type === 'boolean' ? '1 or 0 (true or false)' : error.message.toLowerCase());
    throw new ConfigError(`${fromFlag.has(name) ? (FLAG_OF[name] ?? name) : name} must be ${expect}, got '${shown}'`);
  }
  return value as RegistryEnv;
}

/** Builds the config from flags (input) and the documented environment, checked once; the result is frozen. */
export function loadConfig(input: ConfigInput, env: NodeJS.ProcessEnv = process.env): RegistryConfig {
  const e = readEnv(input, env);
  const { host, port } = parseListen(e.PLANETLITE_LISTEN);
  const publicHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const dataDir = e.PLANETLITE_DATA_DIR ? resolve(e.PLANETLITE_DATA_DIR) : undefined;
  const tls = tlsConfig(e, host, dataDir);
  const scheme = tls.mode === 'off' ? 'http' : 'https';
  const cfg: RegistryConfig = {
    host,
    port,
    listenBacklog: e.PLANETLITE_LISTEN_BACKLOG,
    dataDir,
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    adminEmail: e.PLANETLITE_ADMIN_EMAIL,
    adminPassword: e.PLANETLITE_ADMIN_PASSWORD,
    publicUrl: (e.PLANETLITE_PUBLIC_URL ?? `${scheme}://${publicHost.includes(':') ? `[${publicHost}]` : publicHost}:${port}`).replace(/\/+$/, ''),
    tls,
    logLevel: e.PLANETLITE_LOG_LEVEL,
    defaultImage: e.PLANETLITE_DEFAULT_IMAGE,
    sliceLifetimeDays: e.PLANETLITE_SLICE_LIFETIME_DAYS,
    maxRenewDays: e.PLANETLITE_MAX_RENEW_DAYS,
    portsPerSliver: e.PLANETLITE_PORTS_PER_SLIVER,
    tokenTtlSeconds: e.PLANETLITE_TOKEN_TTL_SECONDS,
    authCacheSeconds: e.PLANETLITE_AUTH_CACHE_SECONDS,
    docCacheSeconds: e.PLANETLITE_DOC_CACHE_SECONDS,
    dbPrepare: e.PLANETLITE_DB_PREPARE,
    dbPoolSize: e.PLANETLITE_DB_POOL_SIZE,
    reportWrites: e.PLANETLITE_REPORT_WRITES,
    loginRateLimitPerMinute: e.PLANETLITE_LOGIN_RATE_LIMIT,
    longPollMaxSeconds: e.PLANETLITE_LONG_POLL_MAX_SECONDS,
    nodeOfflineAfterSeconds: e.PLANETLITE_NODE_OFFLINE_AFTER_SECONDS,
    bodyLimitBytes: e.PLANETLITE_BODY_LIMIT_BYTES,
    usageSampleSeconds: e.PLANETLITE_USAGE_SAMPLE_SECONDS,
    usageRetentionHours: e.PLANETLITE_USAGE_RETENTION_HOURS,
    notify: {
      webhookUrl: e.PLANETLITE_NOTIFY_WEBHOOK ?? null,
      smtpUrl: e.PLANETLITE_SMTP_URL ?? null,
      mailFrom: e.PLANETLITE_MAIL_FROM ?? `PlanetLite <planetlite@${hostname()}>`,
    },
    sweeps: input.sweeps ?? true,
    imagesDir: e.PLANETLITE_IMAGES_DIR ? resolve(e.PLANETLITE_IMAGES_DIR) : undefined,
    maxImageBytes: e.PLANETLITE_MAX_IMAGE_BYTES,
    torrentPort: e.PLANETLITE_TORRENT_PORT,
    seedUploadKbps: e.PLANETLITE_SEED_UPLOAD_KBPS,
    superSeedMs: e.PLANETLITE_SUPERSEED_SECONDS * 1000,
    ...input.overrides,
  };
  if (cfg.tls.mode !== 'off' && new URL(cfg.publicUrl).protocol !== 'https:') {
    throw new ConfigError(`PLANETLITE_PUBLIC_URL is '${cfg.publicUrl}', but the registry serves HTTPS: use https://, or --plain-http behind a TLS proxy`);
  }
  if (cfg.databaseUrl && cfg.reportWrites > nodeConnections(cfg)) {
    throw new ConfigError(`PLANETLITE_REPORT_WRITES (${cfg.reportWrites}) must be at most ${nodeConnections(cfg)}, the connections nodes may hold of PLANETLITE_DB_POOL_SIZE (${cfg.dbPoolSize}): polls and key lookups need some too`);
  }
  if (cfg.tls.mode === 'own-ca') cfg.tls.sans.unshift(new URL(cfg.publicUrl).hostname.replace(/^\[|\]$/g, ''));
  return deepFreeze(cfg);
}

/** Nothing changes the config after start: every part of it is frozen. */
function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;

/** TLS settings; refuses plain HTTP anywhere but on loopback. */
function tlsConfig(e: RegistryEnv, host: string, dataDir: string | undefined): TlsConfig {
  const certFile = e.PLANETLITE_TLS_CERT;
  const keyFile = e.PLANETLITE_TLS_KEY;
  const caFile = e.PLANETLITE_TLS_CA;
  const sans = (e.PLANETLITE_TLS_SANS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  if (e.PLANETLITE_PLAIN_HTTP) {
    if (certFile || keyFile) throw new ConfigError('--plain-http and --tls-cert/--tls-key exclude each other');
    if (!LOOPBACK.test(host)) {
      throw new ConfigError(`--plain-http is allowed only on a loopback listen address (behind a TLS-terminating proxy), not on '${host}': drop it to serve HTTPS`);
    }
    return { mode: 'off', dir: undefined, certFile: undefined, keyFile: undefined, caFile: undefined, sans: [] };
  }
  if (!!certFile !== !!keyFile) throw new ConfigError('--tls-cert and --tls-key go together (the certificate chain and its private key)');
  if (caFile && !certFile) throw new ConfigError('--tls-ca goes with --tls-cert and --tls-key');
  if (certFile) return { mode: 'files', dir: undefined, certFile: resolve(certFile), keyFile: resolve(keyFile as string), caFile: caFile ? resolve(caFile) : undefined, sans };
  const listenSans = host === '0.0.0.0' || host === '::' ? [] : [host];
  return { mode: 'own-ca', dir: dataDir ? join(dataDir, 'tls') : undefined, certFile: undefined, keyFile: undefined, caFile: undefined, sans: [...listenSans, ...sans, 'localhost', '127.0.0.1', '::1'] };
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`--listen must be HOST:PORT (for example 127.0.0.1:8080), got '${listen}'`);
  return { host: (m[1] ?? m[2]) as string, port };
}

