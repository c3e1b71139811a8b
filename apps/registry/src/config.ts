// Registry configuration: command-line flags and environment, checked once at start.
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { NotifyConfig } from './services/notify.js';
import type { TlsConfig } from './tls.js';

export interface RegistryConfig {
  host: string;
  port: number;
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
  overrides?: Partial<RegistryConfig>;
}

export class ConfigError extends Error {}

/** Builds the config from explicit input, falling back to the documented environment variables. */
export function loadConfig(input: ConfigInput, env: NodeJS.ProcessEnv = process.env): RegistryConfig {
  const listen = input.listen ?? env.PLANETLITE_LISTEN ?? '127.0.0.1:8080';
  const { host, port } = parseListen(listen);
  const num = (name: string, def: number, min: number, max: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got '${raw}'`);
    return n;
  };
  const publicHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const dataDir = input.dataDir ? resolve(input.dataDir) : env.PLANETLITE_DATA_DIR ? resolve(env.PLANETLITE_DATA_DIR) : undefined;
  const tls = tlsConfig(input, env, host, dataDir);
  const scheme = tls.mode === 'off' ? 'http' : 'https';
  const cfg: RegistryConfig = {
    host,
    port,
    dataDir,
    databaseUrl: input.databaseUrl ?? (env.DATABASE_URL || undefined),
    redisUrl: input.redisUrl ?? (env.REDIS_URL || undefined),
    adminEmail: input.adminEmail ?? (env.PLANETLITE_ADMIN_EMAIL || undefined),
    adminPassword: input.adminPassword ?? (env.PLANETLITE_ADMIN_PASSWORD || undefined),
    publicUrl: (input.publicUrl ?? env.PLANETLITE_PUBLIC_URL ?? `${scheme}://${publicHost.includes(':') ? `[${publicHost}]` : publicHost}:${port}`).replace(/\/+$/, ''),
    tls,
    logLevel: input.logLevel ?? env.PLANETLITE_LOG_LEVEL ?? 'info',
    defaultImage: env.PLANETLITE_DEFAULT_IMAGE || 'debian12',
    sliceLifetimeDays: num('PLANETLITE_SLICE_LIFETIME_DAYS', 14, 1, 365),
    maxRenewDays: num('PLANETLITE_MAX_RENEW_DAYS', 56, 1, 3650),
    portsPerSliver: num('PLANETLITE_PORTS_PER_SLIVER', 10, 1, 1000),
    tokenTtlSeconds: num('PLANETLITE_TOKEN_TTL_SECONDS', 86400, 60, 90 * 86400),
    loginRateLimitPerMinute: num('PLANETLITE_LOGIN_RATE_LIMIT', 10, 1, 100000),
    longPollMaxSeconds: num('PLANETLITE_LONG_POLL_MAX_SECONDS', 60, 1, 300),
    nodeOfflineAfterSeconds: num('PLANETLITE_NODE_OFFLINE_AFTER_SECONDS', 150, 10, 86400),
    bodyLimitBytes: num('PLANETLITE_BODY_LIMIT_BYTES', 256 * 1024, 1024, 64 * 1024 * 1024),
    usageSampleSeconds: num('PLANETLITE_USAGE_SAMPLE_SECONDS', 60, 10, 3600),
    usageRetentionHours: num('PLANETLITE_USAGE_RETENTION_HOURS', 48, 24, 24 * 366),
    notify: {
      webhookUrl: env.PLANETLITE_NOTIFY_WEBHOOK || null,
      smtpUrl: env.PLANETLITE_SMTP_URL || null,
      mailFrom: env.PLANETLITE_MAIL_FROM || `PlanetLite <planetlite@${hostname()}>`,
    },
    sweeps: input.sweeps ?? true,
    imagesDir: env.PLANETLITE_IMAGES_DIR ? resolve(env.PLANETLITE_IMAGES_DIR) : undefined,
    maxImageBytes: num('PLANETLITE_MAX_IMAGE_BYTES', 8 * 1024 ** 3, 1, 2 ** 50),
    torrentPort: num('PLANETLITE_TORRENT_PORT', 0, 0, 65535),
    seedUploadKbps: env.PLANETLITE_SEED_UPLOAD_KBPS ? num('PLANETLITE_SEED_UPLOAD_KBPS', 0, 8, 100_000_000) : undefined,
    superSeedMs: num('PLANETLITE_SUPERSEED_SECONDS', 15, 0, 3600) * 1000,
    ...input.overrides,
  };
  if (!URL.canParse(cfg.publicUrl) || !/^https?:$/.test(new URL(cfg.publicUrl).protocol)) {
    throw new ConfigError(`PLANETLITE_PUBLIC_URL must be an http(s):// URL, got '${cfg.publicUrl}'`);
  }
  if (cfg.tls.mode !== 'off' && new URL(cfg.publicUrl).protocol !== 'https:') {
    throw new ConfigError(`PLANETLITE_PUBLIC_URL is '${cfg.publicUrl}', but the registry serves HTTPS: use https://, or --plain-http behind a TLS proxy`);
  }
  if (cfg.tls.mode === 'own-ca') cfg.tls.sans.unshift(new URL(cfg.publicUrl).hostname.replace(/^\[|\]$/g, ''));
  if (cfg.adminPassword !== undefined && cfg.adminPassword.length < 8) {
    throw new ConfigError('PLANETLITE_ADMIN_PASSWORD must be at least 8 characters');
  }
  if (cfg.databaseUrl && !/^postgres(ql)?:\/\//.test(cfg.databaseUrl)) {
    throw new ConfigError(`DATABASE_URL must be a postgres:// URL, got '${cfg.databaseUrl}'`);
  }
  if (cfg.redisUrl && !/^rediss?:\/\//.test(cfg.redisUrl)) throw new ConfigError(`REDIS_URL must be a redis:// URL, got '${cfg.redisUrl}'`);
  const { webhookUrl, smtpUrl } = cfg.notify;
  if (webhookUrl && !(URL.canParse(webhookUrl) && /^https?:$/.test(new URL(webhookUrl).protocol))) {
    throw new ConfigError(`PLANETLITE_NOTIFY_WEBHOOK must be an http(s):// URL, got '${webhookUrl}'`);
  }
  if (smtpUrl && !/^smtps?:\/\/[^/]+/.test(smtpUrl)) {
    throw new ConfigError(`PLANETLITE_SMTP_URL must look like smtp://host:25 or smtps://user:pass@host:465, got '${smtpUrl.replace(/\/\/[^@/]*@/, '//…@')}'`);
  }
  return cfg;
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`--listen must be HOST:PORT (for example 127.0.0.1:8080), got '${listen}'`);
  return { host: (m[1] ?? m[2]) as string, port };
}

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;

/** TLS settings from flags and environment; refuses plain HTTP anywhere but on loopback. */
function tlsConfig(input: ConfigInput, env: NodeJS.ProcessEnv, host: string, dataDir: string | undefined): TlsConfig {
  const flag = (v: string | undefined) => v !== undefined && /^(1|true|yes|on)$/i.test(v);
  const plain = input.plainHttp ?? flag(env.PLANETLITE_PLAIN_HTTP);
  const certFile = input.tlsCert ?? (env.PLANETLITE_TLS_CERT || undefined);
  const keyFile = input.tlsKey ?? (env.PLANETLITE_TLS_KEY || undefined);
  const caFile = input.tlsCa ?? (env.PLANETLITE_TLS_CA || undefined);
  const extra = input.tlsSans ?? (env.PLANETLITE_TLS_SANS ? env.PLANETLITE_TLS_SANS.split(',') : []);
  const sans = extra.map((s) => s.trim()).filter(Boolean);
  for (const s of sans) {
    if (!/^[A-Za-z0-9.:*-]+$/.test(s.replace(/^\[|\]$/g, ''))) throw new ConfigError(`--tls-san takes a host name or an IP address, got '${s}'`);
  }
  if (plain) {
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
