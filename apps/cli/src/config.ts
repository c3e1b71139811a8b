// The saved login: which registry, its token and who we are, in one JSON file (mode 0600).
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CliError } from './errors.js';

export interface CliConfig {
  registry?: string | undefined;
  token?: string | undefined;
  expires_at?: string | undefined;
  email?: string | undefined;
  user_id?: string | undefined;
  /** Registries whose CA the user accepted, by origin, as ssh's known_hosts (see trust.ts). */
  known_registries?: Record<string, KnownRegistry> | undefined;
}

export interface KnownRegistry {
  ca_pin: string;
  /** The CA certificate (PEM) that was checked against ca_pin. */
  ca: string;
  trusted_at: string;
}

const FIELDS = ['registry', 'token', 'expires_at', 'email', 'user_id'] as const;

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
  const config: CliConfig = {};
  for (const field of FIELDS) {
    const value = (raw as Record<string, unknown>)[field];
    if (typeof value === 'string') config[field] = value;
  }
  const known = (raw as Record<string, unknown>).known_registries;
  if (known && typeof known === 'object' && !Array.isArray(known)) {
    config.known_registries = {};
    for (const [origin, entry] of Object.entries(known as Record<string, unknown>)) {
      const e = entry as Partial<KnownRegistry> | null;
      if (e && typeof e.ca_pin === 'string' && typeof e.ca === 'string') config.known_registries[origin] = { ca_pin: e.ca_pin, ca: e.ca, trusted_at: String(e.trusted_at ?? '') };
    }
  }
  return config;
}

/**
 * Writes atomically (temp file + rename) with mode 0600, since the file holds a bearer token;
 * the directory is created 0700.
 */
export async function saveConfig(path: string, config: CliConfig): Promise<void> {
  const clean: CliConfig = {};
  for (const field of FIELDS) if (config[field] !== undefined) clean[field] = config[field];
  if (config.known_registries && Object.keys(config.known_registries).length) clean.known_registries = config.known_registries;
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
