// Unit tests of the pure pieces: ssh key parsing, listen addresses, config checks, error details.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { parsePublicKey } from './services/sshkeys.js';
import { envHelp, loadConfig, nodeConnections, parseListen, RegistryEnv } from './config.js';
import { validationDetail } from './plugins/errors.js';
import { message } from './services/notify.js';
import { Closing } from './context.js';
import type { Event } from '@planetlite/api';

function keygen(type: string, bits?: number): string {
  const dir = mkdtempSync('/tmp/pl-unit-');
  try {
    execFileSync('ssh-keygen', ['-q', '-t', type, ...(bits ? ['-b', String(bits)] : []), '-N', '', '-C', 'me@lab', '-f', `${dir}/k`]);
    return readFileSync(`${dir}/k.pub`, 'utf8').trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('parsePublicKey', () => {
  it('accepts ed25519, ecdsa and RSA keys and matches ssh-keygen fingerprints', () => {
    for (const [type, bits] of [['ed25519'], ['ecdsa', 256], ['rsa', 2048]] as const) {
      const line = keygen(type, bits);
      const k = parsePublicKey(line);
      const dir = mkdtempSync('/tmp/pl-unit-');
      try {
        execFileSync('sh', ['-c', 'cat > "$1"', 'sh', `${dir}/k.pub`], { input: line });
        const want = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${dir}/k.pub`], { encoding: 'utf8' }).split(' ')[1];
        expect(k.fingerprint).toBe(want);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      expect(k.comment).toBe('me@lab');
    }
  });
  it('refuses short RSA keys, private keys, garbage and mismatched types', () => {
    expect(() => parsePublicKey(keygen('rsa', 1024))).toThrow(/2048/);
    const ed = keygen('ed25519').split(' ');
    expect(() => parsePublicKey(`ssh-rsa ${ed[1]}`)).toThrow(/valid ssh-rsa/);
    expect(() => parsePublicKey('-----BEGIN OPENSSH PRIVATE KEY-----')).toThrow();
    expect(() => parsePublicKey('ssh-ed25519')).toThrow();
  });
});

describe('config', () => {
  it('parses HOST:PORT including IPv6 and refuses nonsense', () => {
    expect(parseListen('0.0.0.0:8080')).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(parseListen('[::1]:9')).toEqual({ host: '::1', port: 9 });
    expect(() => parseListen('8080')).toThrow(/HOST:PORT/);
    expect(() => parseListen('h:70000')).toThrow(/HOST:PORT/);
  });
  it('reads the documented environment and says what is wrong with it', () => {
    const c = loadConfig({}, { DATABASE_URL: 'postgres://u@h/db', REDIS_URL: 'redis://h:1', PLANETLITE_PORTS_PER_SLIVER: '20' });
    expect(c).toMatchObject({ databaseUrl: 'postgres://u@h/db', redisUrl: 'redis://h:1', portsPerSliver: 20, port: 8080 });
    expect(() => loadConfig({}, { PLANETLITE_PORTS_PER_SLIVER: 'ten' })).toThrow(/PLANETLITE_PORTS_PER_SLIVER/);
    expect(() => loadConfig({}, { DATABASE_URL: 'mysql://x' })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({}, { PLANETLITE_ADMIN_PASSWORD: 'short' })).toThrow(/at least 8/);
  });
  it('names the variable, or the flag that set it, with the range and the value (secrets hidden)', () => {
    expect(() => loadConfig({}, { PLANETLITE_PORTS_PER_SLIVER: '0' })).toThrow("PLANETLITE_PORTS_PER_SLIVER must be an integer from 1 to 1000, got '0'");
    expect(() => loadConfig({}, { PLANETLITE_ADMIN_PASSWORD: 'short' })).toThrow("PLANETLITE_ADMIN_PASSWORD must be at least 8 characters, got '…'");
    expect(() => loadConfig({}, { PLANETLITE_SMTP_URL: 'smtp:/me:secret@relay' })).toThrow("got 'smtp:/…@relay'");
    expect(() => loadConfig({ tlsSans: ['a/b'] }, {})).toThrow("--tls-san must be host names or IP addresses separated by commas, got 'a/b'");
    expect(() => loadConfig({}, { PLANETLITE_LOG_LEVEL: 'loud' })).toThrow('PLANETLITE_LOG_LEVEL must be one of trace, debug, info, warn, error');
    // Reports must leave PostgreSQL connections for the API.
    const pg = { DATABASE_URL: 'postgres://u@h/db' };
    const small = loadConfig({}, { ...pg, PLANETLITE_DB_POOL_SIZE: '8', PLANETLITE_REPORT_WRITES: '2' });
    expect(small).toMatchObject({ dbPoolSize: 8, reportWrites: 2 });
    // Nodes hold all but a fifth of the pool, and at least 2 connections stay for users.
    expect([nodeConnections(small), nodeConnections({ dbPoolSize: 20 }), nodeConnections({ dbPoolSize: 100 })]).toEqual([6, 16, 80]);
    expect(() => loadConfig({}, { ...pg, PLANETLITE_DB_POOL_SIZE: '5' })).toThrow('PLANETLITE_REPORT_WRITES (4) must be at most 3, the connections nodes may hold of PLANETLITE_DB_POOL_SIZE (5)');
    expect(() => loadConfig({}, { PLANETLITE_REPORT_WRITES: '0' })).toThrow("PLANETLITE_REPORT_WRITES must be an integer from 1 to 999, got '0'");
    expect(() => loadConfig({}, { PLANETLITE_LISTEN_BACKLOG: '0' })).toThrow("PLANETLITE_LISTEN_BACKLOG must be an integer from 1 to 65535, got '0'");
  });
  it('is read once and frozen: nothing changes it after start', () => {
    const c = loadConfig({ listen: '127.0.0.1:9000' }, {});
    expect(Object.isFrozen(c) && Object.isFrozen(c.tls) && Object.isFrozen(c.tls.sans) && Object.isFrozen(c.notify)).toBe(true);
    expect(() => Object.assign(c, { port: 1 })).toThrow(TypeError);
  });
  it('documents every variable it reads in the help of serve', () => {
    const help = envHelp();
    for (const name of Object.keys(RegistryEnv.properties)) expect(help).toContain(`  ${name}`);
    expect(help).toContain('PLANETLITE_PORTS_PER_SLIVER (default 10; 1-1000)');
  });
});

describe("the registry's close (Closing)", () => {
  it('tells each waiting one once, not those that stopped waiting, and one that comes after at once', () => {
    const closing = new Closing();
    const told: string[] = [];
    closing.onClose(() => told.push('poll 1'));
    const forget = closing.onClose(() => told.push('poll 2'));
    closing.onClose(() => told.push('stream'));
    forget();
    expect(told).toEqual([]);
    closing.close();
    closing.close();
    expect([closing.closed, told]).toEqual([true, ['poll 1', 'stream']]);
    closing.onClose(() => told.push('late poll'))();
    expect(told).toEqual(['poll 1', 'stream', 'late poll']);
  });
});

describe('validationDetail', () => {
  it('names the field', () => {
    expect(validationDetail('body', [{ instancePath: '', keyword: 'additionalProperties', params: { additionalProperty: 'x' } }])).toBe("body has unknown field 'x'");
    expect(validationDetail('body', [{ instancePath: '/resources/memory_mb', keyword: 'minimum', message: 'must be >= 16' }])).toBe('body.resources.memory_mb must be >= 16');
    expect(validationDetail('body', [{ instancePath: '/kind', keyword: 'enum', params: { allowedValues: ['lxc', 'kvm'] } }])).toBe('body.kind must be one of lxc, kvm');
  });
});

describe('notices to slice members', () => {
  const ev = (type: string, data: Record<string, unknown>) => ({ id: 7, type, at: '2026-12-04T03:00:00.000Z', node: 'n1', slice: 'site_exp', sliver: 's1', data }) as unknown as Event;

  it('say that a sliver was frozen, not killed, with the pressure figures and what ends it', () => {
    const m = message(ev('sliver.frozen', { reason: 'node memory pressure 40% ≥ 30%, and this sliver stalled on memory the most (its own 35%)', node_psi_some_avg10: 40, sliver_psi_some_avg10: 35, thaw_psi_some: 10, freeze_timeout_seconds: 60 }));
    expect(m.subject).toContain('frozen');
    expect(m.text).toContain('paused, not killed');
    expect(m.text).toContain('below 10%');
    expect(m.text).toContain('after 60 s');
    expect(m.text).toContain('node memory pressure 40%');
  });

  it('say why a sliver was reset on memory pressure', () => {
    const m = message(ev('watchdog.reset', { level: 'pressure', reason: 'node memory pressure still 20% ≥ 10% after 60 s frozen', action: 'restart', node_psi_some_avg10: 20, sliver_psi_some_avg10: 15 }));
    expect(m.text).toContain('after 60 s frozen');
    expect(m.text).toContain('restarted');
    expect(m.text).not.toContain('MiB');
  });
});
