// planetlite-registry: serve the v1 API, or apply database migrations.
import { Command, Option } from 'commander';
import { createLogger } from '@planetlite/core';
import { migrate, openDatabase } from '@planetlite/db';
import { buildApp, VERSION } from './app.js';
import { ConfigError, loadConfig } from './config.js';

const ENV_HELP = `
Environment:
  DATABASE_URL                 postgres://user:pass@host:port/db of a PostgreSQL server;
                               absent: embedded PGlite kept under --data-dir
  REDIS_URL                    redis://host:port carrying change notifications between
                               replicas; absent: in-process (run one replica only)
  PLANETLITE_ADMIN_EMAIL       on first start against an empty database, create this admin
  PLANETLITE_ADMIN_PASSWORD    … with this password (at least 8 characters)
  PLANETLITE_PUBLIC_URL        URL nodes and users reach this registry at (default from --listen)
  PLANETLITE_DEFAULT_IMAGE     image of slices that name none (default debian12)
  PLANETLITE_LOG_LEVEL         trace, debug, info (default), warn, error
  PLANETLITE_SLICE_LIFETIME_DAYS (14), PLANETLITE_MAX_RENEW_DAYS (56),
  PLANETLITE_PORTS_PER_SLIVER (10), PLANETLITE_TOKEN_TTL_SECONDS (86400),
  PLANETLITE_LOGIN_RATE_LIMIT (10 per minute per address and email),
  PLANETLITE_LONG_POLL_MAX_SECONDS (60), PLANETLITE_NODE_OFFLINE_AFTER_SECONDS (150),
  PLANETLITE_BODY_LIMIT_BYTES (262144),
  PLANETLITE_USAGE_SAMPLE_SECONDS (60: one accounting sample per sliver per interval),
  PLANETLITE_USAGE_RETENTION_HOURS (48, at least 24: how long samples are kept)
  PLANETLITE_NOTIFY_WEBHOOK    http(s) URL that gets a JSON POST when the watchdog resets a sliver
  PLANETLITE_SMTP_URL          smtp://host:25 (smtps://user:pass@host:465) relay that mails the
                               slice's members about it; PLANETLITE_MAIL_FROM sets the sender
  PLANETLITE_IMAGES_DIR        where uploaded image archives are kept (default <data-dir>/images);
                               several replicas must share it (e.g. NFS) to serve every image
  PLANETLITE_MAX_IMAGE_BYTES   largest image upload (default 8589934592, 8 GiB)
  PLANETLITE_TORRENT_PORT      TCP port the image seeder takes BitTorrent peers on (default 0: any)
  PLANETLITE_SEED_UPLOAD_KBPS  upload cap in kbit/s of the image seeder and web seed together
                               (default: none)
  PLANETLITE_SUPERSEED_SECONDS a piece the seeder sent to one node is refused to others for this
                               long, so they trade it among themselves (default 15; 0: off)`;

const program = new Command('planetlite-registry')
  .description('The PlanetLite registry: hands out slices to researchers and desired state to node agents.')
  .version(VERSION)
  .showHelpAfterError('(run with --help for usage)');

program
  .command('serve')
  .description('serve the v1 REST API (docs at /docs, OpenAPI at /openapi.json)')
  .addOption(new Option('--listen <host:port>', 'address to listen on').default('127.0.0.1:8080').env('PLANETLITE_LISTEN'))
  .addOption(new Option('--data-dir <dir>', 'where the embedded database lives when DATABASE_URL is unset').default('./.data/registry').env('PLANETLITE_DATA_DIR'))
  .addHelpText('after', ENV_HELP)
  .action(async (opts: { listen: string; dataDir: string }) => {
    const config = loadConfig({ listen: opts.listen, dataDir: opts.dataDir });
    const log = createLogger({ name: 'registry', level: config.logLevel });
    const app = await buildApp({ config, logger: log });
    await app.listen({ host: config.host, port: config.port });
    log.info({ url: config.publicUrl, database: app.ctx.db.kind, fanout: app.ctx.fanout.kind, dataDir: config.databaseUrl ? undefined : config.dataDir }, 'registry listening');
    const stop = async (signal: string) => {
      log.info({ signal }, 'shutting down');
      await app.close();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });

program
  .command('migrate')
  .description('apply pending database migrations and exit (serve also does this on start)')
  .addOption(new Option('--data-dir <dir>', 'embedded database directory when DATABASE_URL is unset').default('./.data/registry').env('PLANETLITE_DATA_DIR'))
  .addHelpText('after', ENV_HELP)
  .action(async (opts: { dataDir: string }) => {
    const config = loadConfig({ dataDir: opts.dataDir });
    const db = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
    try {
      const applied = await migrate(db);
      console.log(applied.length ? `applied ${applied.map((m) => `${m.version}_${m.name}`).join(', ')}` : 'database is up to date');
    } finally {
      await db.close();
    }
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  // Anything thrown, Error or not (PGlite exits with bare objects), ends as one readable line.
  const msg = err instanceof ConfigError || err instanceof Error ? err.message : err && typeof err === 'object' && 'message' in err ? String(err.message) : JSON.stringify(err);
  process.stderr.write(`planetlite-registry: ${msg}\n`);
  if (/ECONNREFUSED/.test(msg)) process.stderr.write('planetlite-registry: is the database/redis server running and DATABASE_URL/REDIS_URL right?\n');
  process.exit(1);
});
