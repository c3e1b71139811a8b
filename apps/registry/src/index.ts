// The PlanetLite registry as a library: build the app, or start a listening server.
import { buildApp, type BuildOptions } from './app.js';
import { loadConfig, type ConfigInput, type RegistryConfig } from './config.js';

export { buildApp, VERSION, type BuildOptions } from './app.js';
export { loadConfig, parseListen, ConfigError, type RegistryConfig, type ConfigInput } from './config.js';
export { sweepExpiredSlices, sweepOfflineNodes, pruneUsageSamples } from './services/sweeps.js';
export { desiredStateOf, etagOf } from './services/desired-state.js';

export interface RunningRegistry {
  url: string;
  config: RegistryConfig;
  close(): Promise<void>;
}

/** Starts a registry listening on `listen` (port 0 picks a free one). */
export async function startRegistry(input: ConfigInput & Pick<BuildOptions, 'db' | 'fanout' | 'logger'>, env: NodeJS.ProcessEnv = {}): Promise<RunningRegistry> {
  let config = loadConfig({ listen: '127.0.0.1:0', logLevel: 'warn', ...input }, env);
  const app = await buildApp({ ...input, config });
  await app.listen({ host: config.host, port: config.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  if (config.port === 0) config = { ...config, port, publicUrl: input.publicUrl ?? url };
  app.ctx.config = config;
  return { url, config, close: () => app.close() };
}
