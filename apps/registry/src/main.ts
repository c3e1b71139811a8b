// planetlite-registry: serve the v1 API, or apply database migrations.
import { Command, Option } from 'commander';
import { createLogger, onStopSignal } from '@planetlite/core';
import { migrate, openDatabase } from '@planetlite/db';
import { buildApp, listenOptions, VERSION } from './app.js';
import { ConfigError, envHelp, loadConfig } from './config.js';
import { tuneGcForServing } from './gc.js';

const ENV_HELP = `
${envHelp()}`;

const program = new Command('planetlite-registry')
  .description('The PlanetLite registry: hands out slices to researchers and desired state to node agents.')
  .version(VERSION)
  .showHelpAfterError('(run with --help for usage)');

program
  .command('serve')
  .description('serve the v1 REST API (docs at /docs, OpenAPI at /openapi.json)')
  .addOption(new Option('--listen <host:port>', 'address to listen on').default('127.0.0.1:8080').env('PLANETLITE_LISTEN'))
  .addOption(new Option('--data-dir <dir>', 'where the embedded database and the registry CA live').default('./.data/registry').env('PLANETLITE_DATA_DIR'))
  .option('--tls-cert <file>', "serve this certificate chain (PEM) instead of one from the registry's own CA, e.g. from an ACME client")
  .option('--tls-key <file>', 'the private key (PEM) of --tls-cert')
  .option('--tls-ca <file>', 'with --tls-cert: the CA certificate nodes and users pin (default: the last one of the chain, if any)')
  .option('--tls-san <name|ip>', "another name or address for the registry's own server certificate (repeatable)", (v: string, all: string[] | undefined) => [...(all ?? []), v])
  .option('--plain-http', 'serve plain HTTP: only on a loopback --listen address, behind a reverse proxy that terminates TLS')
  .addHelpText('after', `
HTTPS is the default. On first start the registry makes its own CA and a server certificate for the
host of PLANETLITE_PUBLIC_URL, --listen and every --tls-san, under DATA_DIR/tls (keys mode 0600),
and reuses them later; a missing name gets a new server certificate from the same CA, so pins stay
valid. Replicas share DATA_DIR/tls (or the same --tls-* files). SIGHUP reloads the certificate
(a renewed one) without dropping connections. Nodes and users pin the CA: its pin is logged at
start, shown by \`planetlite site token\`, and the CA itself is served at /ca.pem.
${ENV_HELP}`)
  .action(async (opts: { listen: string; dataDir: string; tlsCert?: string; tlsKey?: string; tlsCa?: string; tlsSan?: string[]; plainHttp?: boolean }) => {
    const config = loadConfig({
      listen: opts.listen,
      dataDir: opts.dataDir,
      ...(opts.plainHttp ? { plainHttp: true } : {}),
      ...(opts.tlsCert ? { tlsCert: opts.tlsCert } : {}),
      ...(opts.tlsKey ? { tlsKey: opts.tlsKey } : {}),
      ...(opts.tlsCa ? { tlsCa: opts.tlsCa } : {}),
      ...(opts.tlsSan ? { tlsSans: opts.tlsSan } : {}),
    });
    const log = createLogger({ name: 'registry', level: config.logLevel });
    tuneGcForServing();
    const app = await buildApp({ config, logger: log });
    await app.listen(listenOptions(config));
    log.info({ url: config.publicUrl, ca_pin: app.ctx.trust.caPin, tls: config.tls.mode, database: app.ctx.db.kind, fanout: app.ctx.fanout.kind, dataDir: config.databaseUrl ? undefined : config.dataDir }, 'registry listening');
    process.on('SIGHUP', () => void app.reloadTls().catch((err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, 'TLS reload failed; keeping the current certificate')));
    const stop = async (signal: string) => {
      log.info({ signal }, 'shutting down');
      await app.close();
      process.exit(0);
    };
    onStopSignal((signal) => void stop(signal));
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
