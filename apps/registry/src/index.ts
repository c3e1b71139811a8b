// The PlanetLite registry as a library: build the app, or start a listening server.
import { buildApp, listenOptions, type BuildOptions } from './app.js';
import { createServer, type AddressInfo } from 'node:net';
import { loadConfig, parseListen, type ConfigInput, type RegistryConfig } from './config.js';

export { buildApp, VERSION, type BuildOptions } from './app.js';
export { loadConfig, parseListen, envHelp, ConfigError, RegistryEnv, type RegistryConfig, type ConfigInput } from './config.js';
export { sweepExpiredSlices, sweepOfflineNodes, pruneUsageSamples } from './services/sweeps.js';
export { desiredStateOf, etagOf } from './services/desired-state.js';

export interface RunningRegistry {
  url: string;
  config: RegistryConfig;
  /** The CA to trust and its pin; null on plain HTTP. */
  ca: string | null;
  caPin: string | null;
  /** Reads the certificate files again, as SIGHUP does for `serve`. */
  reloadTls(): Promise<void>;
  close(): Promise<void>;
}

/** A port free on host now (for a listen on port 0: the config names the real port from the start). */
async function freePortOn(host: string): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => srv.once('error', reject).listen(0, host, resolve));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Starts a registry listening on `listen` (port 0 picks a free one). */
export async function startRegistry(input: ConfigInput & Pick<BuildOptions, 'db' | 'fanout' | 'logger'>, env: NodeJS.ProcessEnv = {}): Promise<RunningRegistry> {
  const wanted = parseListen(input.listen ?? '127.0.0.1:0');
  const bracketed = wanted.host.includes(':') ? `[${wanted.host}]` : wanted.host;
  const listen = wanted.port === 0 ? `${bracketed}:${await freePortOn(wanted.host)}` : (input.listen as string);
  const config = loadConfig({ logLevel: 'warn', ...input, listen }, env);
  const app = await buildApp({ ...input, config });
  await app.listen(listenOptions(config));
  const url = `${config.tls.mode === 'off' ? 'http' : 'https'}://${bracketed === '0.0.0.0' ? '127.0.0.1' : bracketed}:${config.port}`;
  return { url, config, ca: app.ctx.trust.ca, caPin: app.ctx.trust.caPin, reloadTls: () => app.reloadTls(), close: () => app.close() };
}
