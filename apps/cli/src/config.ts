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
  return config;
}

/**
 * Writes atomically (temp file + rename) with mode 0600, since the file holds a bearer token;
 * the directory is created 0700.
 */
export async function saveConfig(path: string, config: CliConfig): Promise<void> {
  const clean: CliConfig = {};
  for (const field of FIELDS) if (config[field] !== undefined) clean[field] = config[field];
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

/** "127.0.0.1:8080" → "http://127.0.0.1:8080"; anything but http(s) is refused. */
export function normalizeRegistry(input: string): string {
  const text = input.trim();
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new CliError(`invalid registry URL '${input}' (expected e.g. http://registry.example:8080)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError(`invalid registry URL '${input}': only http and https are supported`);
  }
  return (url.origin + url.pathname).replace(/\/+$/, '');
}
