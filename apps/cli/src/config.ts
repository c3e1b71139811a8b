// The saved login: which registry, its token and who we are, in one JSON file (mode 0600).
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { CliError } from './errors.js';

/** A registry whose CA the user accepted (trust.ts): the pin, and the CA certificate checked against it. */
const KnownRegistry = Type.Object({
  ca_pin: Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }),
  ca: Type.String({ pattern: '-----BEGIN CERTIFICATE-----' }),
  trusted_at: Type.String(),
});
export type KnownRegistry = Static<typeof KnownRegistry>;

/** The config file's schema: what login saves and every command reads. Unknown fields are dropped. */
export const CliConfigSchema = Type.Object({
  registry: Type.Optional(Type.String({ minLength: 1 })),
  token: Type.Optional(Type.String({ minLength: 1 })),
  expires_at: Type.Optional(Type.String()),
  email: Type.Optional(Type.String()),
  user_id: Type.Optional(Type.String()),
  /** Registries whose CA the user accepted, by origin, as ssh's known_hosts. */
  known_registries: Type.Optional(Type.Record(Type.String(), KnownRegistry)),
});

export interface CliConfig {
  registry?: string | undefined;
  token?: string | undefined;
  expires_at?: string | undefined;
  email?: string | undefined;
  user_id?: string | undefined;
  known_registries?: Record<string, KnownRegistry> | undefined;
}

const FIELDS = Object.keys(CliConfigSchema.properties) as (keyof CliConfig)[];

/** --config, else PLANETLITE_CONFIG, else $XDG_CONFIG_HOME (or ~/.config)/planetlite/config.json. */
export function configPath(env: Record<string, string | undefined>, flag?: string): string {
  if (flag) return flag;
  if (env.PLANETLITE_CONFIG) return env.PLANETLITE_CONFIG;
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'planetlite', 'config.json');
}

/** A missing file is an empty config; a broken one is an error that names the file. */
export async function loadConfig(path: string): Promise<CliConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new CliError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new CliError(`config file ${path} is not valid JSON; fix or remove it and log in again`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new CliError(`config file ${path} does not hold a JSON object`);
  const config: Record<string, unknown> = {};
  for (const field of FIELDS) if ((raw as Record<string, unknown>)[field] !== undefined) config[field] = (raw as Record<string, unknown>)[field];
  const error = Value.Errors(CliConfigSchema, config).First();
  if (error) {
    const field = error.path.replace(/^\//, '').replaceAll('/', '.') || '(top level)';
    throw new CliError(`config file ${path}: ${field} ${error.message.toLowerCase()}; fix it, or remove the file and log in again`);
  }
  return config as CliConfig;
}

/**
 * Writes atomically (temp file + rename) with mode 0600, since the file holds a bearer token;
 * the directory is created 0700.
 */
export async function saveConfig(path: string, config: CliConfig): Promise<void> {
  const clean: CliConfig = {};
  for (const field of FIELDS) if (config[field] !== undefined) (clean as Record<string, unknown>)[field] = config[field];
  if (clean.known_registries && !Object.keys(clean.known_registries).length) delete clean.known_registries;
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(clean, null, 2) + '\n', { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, path);
  } catch (err) {
    throw new CliError(`cannot write config file ${path}: ${(err as Error).message}`);
  }
}

/** "registry.example:8080" → "https://registry.example:8080"; anything but http(s) is refused. */
export function normalizeRegistry(input: string): string {
  const text = input.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `https://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new CliError(`invalid registry URL '${input}' (expected e.g. https://registry.example:8080)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError(`invalid registry URL '${input}': only http and https are supported`);
  }
  return (url.origin + url.pathname).replace(/\/+$/, '');
}
