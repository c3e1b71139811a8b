// What every command needs: the global options, the saved login, a client and the output streams.
import type { Command } from 'commander';
import { PlanetLiteClient, tlsVerifyCodeOf } from '@planetlite/api';
import { configPath, loadConfig, normalizeRegistry, saveConfig, type CliConfig, type KnownRegistry } from './config.js';
import { applyKnownTrust, explainTlsFailure } from './trust.js';
import { CliError, NOT_LOGGED_IN, RegistryUnreachableError, networkReason } from './errors.js';
import type { Io } from './io.js';

export interface GlobalOptions {
  registry?: string;
  token?: string;
  json?: boolean;
  config?: string;
}

/** Ordinary calls give up after this long; the event stream has no limit. */
const REQUEST_TIMEOUT_MS = 30_000;

/**
 * fetch that turns "no answer at all" into RegistryUnreachableError naming the registry, and a
 * certificate the trusted CA did not sign into a loud one-line refusal.
 */
function fetchFor(registry: string, known: KnownRegistry | undefined): typeof fetch {
  return async (input, init) => {
    const signal = init?.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    try {
      return await fetch(input, { ...init, signal });
    } catch (err) {
      if (init?.signal?.aborted) throw err;
      if (tlsVerifyCodeOf(err)) await explainTlsFailure(err, registry, known);
      if (err instanceof TypeError || (err instanceof Error && err.name === 'TimeoutError')) {
        throw new RegistryUnreachableError(registry, networkReason(err));
      }
      throw err;
    }
  };
}

export class Context {
  #config: CliConfig | undefined;

  constructor(
    readonly io: Io,
    readonly program: Command,
  ) {}

  get globals(): GlobalOptions {
    return this.program.opts<GlobalOptions>();
  }

  get json(): boolean {
    return this.globals.json === true;
  }

  get configPath(): string {
    return configPath(this.io.env, this.globals.config);
  }

  async config(): Promise<CliConfig> {
    this.#config ??= await loadConfig(this.configPath);
    return this.#config;
  }

  async saveConfig(config: CliConfig): Promise<void> {
    await saveConfig(this.configPath, config);
    this.#config = config;
  }

  /** --registry, else PLANETLITE_REGISTRY, else the registry saved by login. */
  async registry(): Promise<string | undefined> {
    const given = this.globals.registry ?? this.io.env.PLANETLITE_REGISTRY;
    if (given) return normalizeRegistry(given);
    const saved = (await this.config()).registry;
    return saved ? normalizeRegistry(saved) : undefined;
  }

  /** A client without credentials, for login. */
  async anonymousClient(): Promise<PlanetLiteClient> {
    const registry = await this.registry();
    if (!registry) throw new CliError('no registry: pass --registry URL or set PLANETLITE_REGISTRY');
    const known = applyKnownTrust(await this.config(), registry);
    return new PlanetLiteClient({ registry, fetch: fetchFor(registry, known) });
  }

  /**
   * A client with a token: --token, else PLANETLITE_TOKEN, else the saved one — the saved token
   * only when it was issued by the registry now in use.
   */
  async client(): Promise<PlanetLiteClient> {
    const registry = await this.registry();
    if (!registry) throw new CliError(NOT_LOGGED_IN);
    let token = this.globals.token ?? this.io.env.PLANETLITE_TOKEN;
    if (!token) {
      const saved = await this.config();
      const sameRegistry = saved.registry !== undefined && normalizeRegistry(saved.registry) === registry;
      if (!saved.token || !sameRegistry) {
        throw new CliError(`not logged in to ${registry}: run planetlite login --registry ${registry} --email ...`);
      }
      if (saved.expires_at && Date.parse(saved.expires_at) <= Date.now()) {
        throw new CliError(`your login to ${registry} expired at ${saved.expires_at}: run planetlite login --email ${saved.email ?? '...'}`);
      }
      token = saved.token;
    }
    const known = applyKnownTrust(await this.config(), registry);
    return new PlanetLiteClient({ registry, token, fetch: fetchFor(registry, known) });
  }

  /** Writes lines to stdout. */
  out(text: string): void {
    this.io.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** Writes a note to stderr (progress, hints), keeping stdout for data. */
  note(text: string): void {
    this.io.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
  }

  /** Machine output prints the API value as JSON; human output calls render. */
  emit<T>(value: T, render: (value: T) => string): void {
    if (this.json) this.out(JSON.stringify(value, null, 2));
    else this.out(render(value));
  }
}
