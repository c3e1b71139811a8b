import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { configPath, loadConfig, normalizeRegistry, saveConfig } from './config.js';
import { CliError } from './errors.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'planetlite-cli-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('config file', () => {
  it('round-trips, creating missing directories, with mode 0600', async () => {
    const path = join(dir, 'a', 'b', 'config.json');
    const config = { registry: 'http://127.0.0.1:8080', token: 'secret', expires_at: '2030-01-01T00:00:00.000Z', email: 'a@b.c' };
    await saveConfig(path, config);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'a', 'b'))).mode & 0o777).toBe(0o700);
    expect(await loadConfig(path)).toEqual(config);
  });

  it('tightens an existing file to 0600 on save and drops unknown fields', async () => {
    const path = join(dir, 'config.json');
    await writeFile(path, '{}', { mode: 0o644 });
    await saveConfig(path, { token: 't', ...({ junk: 1 } as object) });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({ token: 't' });
  });

  it('reads a missing file as empty and a broken one as an error naming the file', async () => {
    expect(await loadConfig(join(dir, 'none.json'))).toEqual({});
    const path = join(dir, 'broken.json');
    await writeFile(path, '{not json');
    await expect(loadConfig(path)).rejects.toThrow(CliError);
    await expect(loadConfig(path)).rejects.toThrow(path);
    await writeFile(path, '[1]');
    await expect(loadConfig(path)).rejects.toThrow('does not hold a JSON object');
  });

  it('checks the file against its schema and names the field that is wrong', async () => {
    const path = join(dir, 'typed.json');
    await writeFile(path, JSON.stringify({ registry: 'https://r.example', token: 42 }));
    await expect(loadConfig(path)).rejects.toThrow(`config file ${path}: token expected string; fix it, or remove the file and log in again`);
    await writeFile(path, JSON.stringify({ known_registries: { 'https://r.example': { ca_pin: 'sha256:nothex', ca: 'x', trusted_at: '' } } }));
    await expect(loadConfig(path)).rejects.toThrow(/known_registries\.https:\.\.r\.example\.ca_pin|known_registries/);
    await writeFile(path, JSON.stringify({ token: 't', someday: 'a field of a newer version' }));
    expect(await loadConfig(path)).toEqual({ token: 't' });
  });

  it('finds the file from --config, PLANETLITE_CONFIG, XDG_CONFIG_HOME, then HOME', () => {
    expect(configPath({ PLANETLITE_CONFIG: '/e.json' }, '/f.json')).toBe('/f.json');
    expect(configPath({ PLANETLITE_CONFIG: '/e.json', HOME: '/h' })).toBe('/e.json');
    expect(configPath({ XDG_CONFIG_HOME: '/x', HOME: '/h' })).toBe('/x/planetlite/config.json');
    expect(configPath({ HOME: '/h' })).toBe('/h/.config/planetlite/config.json');
  });
});

describe('normalizeRegistry', () => {
  it('adds https:// when missing (registries serve HTTPS by default) and drops trailing slashes', () => {
    expect(normalizeRegistry('127.0.0.1:8080')).toBe('https://127.0.0.1:8080');
    expect(normalizeRegistry('https://reg.example/base/')).toBe('https://reg.example/base');
    expect(normalizeRegistry('http://reg.example:80/')).toBe('http://reg.example');
  });
  it('refuses other schemes and garbage', () => {
    expect(() => normalizeRegistry('ftp://x')).toThrow('only http and https');
    expect(() => normalizeRegistry('http://')).toThrow('invalid registry URL');
  });
});
