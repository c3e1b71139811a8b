// The registry's HTTPS: its own CA made once and reused, an operator's certificate, plain HTTP only
// on loopback, the CA served for pinning, and a renewed certificate taken on SIGHUP without
// dropping open connections.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { Agent, fetch as undiciFetch } from 'undici';
import { caPinOf, certificatesIn } from '@planetlite/api';
import { loadConfig, startRegistry } from '../src/index.js';
import { loadTls, type TlsConfig } from '../src/tls.js';
import { startRegistryProcess } from '../../../test/harness/registry-process.ts';
import { createTestDatabase } from '../../../test/harness/services.ts';
import { ADMIN } from './helpers.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pl-tls-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ownCa = (sub: string, sans: string[]): TlsConfig => ({ mode: 'own-ca', dir: join(dir, sub), certFile: undefined, keyFile: undefined, caFile: undefined, sans });

/** The certificate a TLS server at host:port presents. */
function presented(port: number, ca: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const raw = s.getPeerX509Certificate();
      s.end();
      if (raw) resolve(raw);
      else reject(new Error('no certificate'));
    });
    s.on('error', reject);
  });
}

describe('its own CA', () => {
  it('is made once under the data dir (keys 0600) and reused; a new name gets a new server certificate from the same CA', async () => {
    const first = await loadTls(ownCa('a', ['registry.example.org', '198.51.100.7', 'localhost']));
    expect(first.caPin).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(first.caPin).toBe(caPinOf(first.ca!));
    for (const f of ['ca-key.pem', 'server-key.pem', 'ca.pem', 'server.pem']) expect(statSync(join(dir, 'a', f)).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'a')).mode & 0o777).toBe(0o700);
    const leaf = new X509Certificate(certificatesIn(first.cert)[0]!);
    expect(leaf.checkIssued(new X509Certificate(first.ca!))).toBe(true);
    expect(leaf.checkHost('registry.example.org')).toBe('registry.example.org');
    expect(leaf.checkIP('198.51.100.7')).toBe('198.51.100.7');
    expect(leaf.checkHost('other.example.org')).toBeUndefined();

    const again = await loadTls(ownCa('a', ['registry.example.org', 'localhost']));
    expect(again).toEqual(first);

    const more = await loadTls(ownCa('a', ['registry.example.org', 'node-facing.example.org']));
    expect(more.caPin).toBe(first.caPin);
    expect(more.cert).not.toBe(first.cert);
    // What the old certificate covered stays covered.
    expect(more.sans).toEqual(expect.arrayContaining(['registry.example.org', '198.51.100.7', 'node-facing.example.org']));
  });

  it('is one CA for replicas that start together on a shared dir, and keeps its pin when ca.pem is lost', async () => {
    const [x, y] = await Promise.all([loadTls(ownCa('shared', ['localhost'])), loadTls(ownCa('shared', ['localhost']))]);
    expect(x.caPin).toBe(y.caPin);
    rmSync(join(dir, 'shared', 'ca.pem'));
    const remade = await loadTls(ownCa('shared', ['localhost']));
    expect(remade.caPin).toBe(x.caPin);
    expect(remade.ca).not.toBe(x.ca);
  });
});

describe('configuration', () => {
  it('serves HTTPS by default, with the public URL in the certificate', () => {
    const cfg = loadConfig({ listen: '0.0.0.0:8443', dataDir: join(dir, 'cfg') }, { PLANETLITE_PUBLIC_URL: 'https://reg.example.org:8443', PLANETLITE_TLS_SANS: '203.0.113.9, alias.example.org' });
    expect(cfg.tls.mode).toBe('own-ca');
    expect(cfg.tls.dir).toBe(join(dir, 'cfg', 'tls'));
    expect(cfg.tls.sans).toEqual(expect.arrayContaining(['reg.example.org', '203.0.113.9', 'alias.example.org', 'localhost']));
    expect(loadConfig({ listen: '127.0.0.1:8443' }, {}).publicUrl).toBe('https://127.0.0.1:8443');
  });

  it('refuses plain HTTP off loopback, half a certificate, and an http:// public URL over HTTPS, in one line each', () => {
    expect(() => loadConfig({ listen: '0.0.0.0:8080', plainHttp: true }, {})).toThrow("--plain-http is allowed only on a loopback listen address (behind a TLS-terminating proxy), not on '0.0.0.0'");
    expect(() => loadConfig({ listen: '127.0.0.1:8080' }, { PLANETLITE_PLAIN_HTTP: '1', PLANETLITE_TLS_CERT: '/x.pem', PLANETLITE_TLS_KEY: '/y.pem' })).toThrow('exclude each other');
    expect(() => loadConfig({ listen: '127.0.0.1:8080', tlsCert: '/x.pem' }, {})).toThrow('--tls-cert and --tls-key go together');
    expect(() => loadConfig({ listen: '127.0.0.1:8080' }, { PLANETLITE_PUBLIC_URL: 'http://reg.example.org' })).toThrow("PLANETLITE_PUBLIC_URL is 'http://reg.example.org', but the registry serves HTTPS");
    expect(loadConfig({ listen: '127.0.0.1:8080', plainHttp: true }, { PLANETLITE_PUBLIC_URL: 'https://proxy.example.org' }).tls.mode).toBe('off');
  });

  it("takes an operator's certificate files, pinning the chain's CA, and refuses a key that is not the certificate's", async () => {
    const a = await loadTls(ownCa('op-a', ['localhost']));
    const b = await loadTls(ownCa('op-b', ['localhost']));
    writeFileSync(join(dir, 'chain.pem'), a.cert);
    writeFileSync(join(dir, 'a.key'), a.key);
    writeFileSync(join(dir, 'b.key'), b.key);
    const files = (key: string): TlsConfig => ({ mode: 'files', dir: undefined, certFile: join(dir, 'chain.pem'), keyFile: join(dir, key), caFile: undefined, sans: [] });
    expect((await loadTls(files('a.key'))).caPin).toBe(a.caPin);
    await expect(loadTls(files('b.key'))).rejects.toThrow(`${join(dir, 'b.key')} is not the key of the certificate in ${join(dir, 'chain.pem')}`);
  });
});

describe('over the wire', () => {
  it('serves its CA at /ca.pem, puts registry URL and pin in enrollment tokens, and reloads a renewed certificate without dropping an open stream', async () => {
    const first = await loadTls(ownCa('served-1', ['localhost', '127.0.0.1']));
    const renewed = await loadTls(ownCa('served-1b', ['localhost', '127.0.0.1']));
    const certFile = join(dir, 'served.pem');
    const keyFile = join(dir, 'served.key');
    writeFileSync(certFile, first.cert);
    writeFileSync(keyFile, first.key);
    const registry = await startRegistry({ listen: '127.0.0.1:0', databaseUrl: await createTestDatabase(inject('pgUrl'), 'tls'), tlsCert: certFile, tlsKey: keyFile, adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false });
    // Trust both CAs: the test checks which certificate is presented, not trust itself.
    const dispatcher = new Agent({ connect: { ca: [first.ca!, renewed.ca!] } });
    try {
      const port = Number(new URL(registry.url).port);
      const get = (path: string, init: Record<string, unknown> = {}) => undiciFetch(`${registry.url}${path}`, { dispatcher, ...init });
      expect(registry.caPin).toBe(first.caPin);
      const served = await get('/ca.pem');
      expect(served.status).toBe(200);
      expect(caPinOf(await served.text())).toBe(first.caPin);

      const token = ((await (await get('/v1/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) })).json()) as { token: string }).token;
      const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
      await get('/v1/sites', { method: 'POST', headers: auth, body: JSON.stringify({ login_base: 'tls', name: 'TLS', max_slices: 5, max_slivers: 5 }) });
      const enrollment = (await (await get('/v1/sites/tls/enrollment-tokens', { method: 'POST', headers: auth, body: '{}' })).json()) as { registry: string; ca_pin: string };
      expect(enrollment).toMatchObject({ registry: registry.url, ca_pin: first.caPin });

      // An event stream open across the reload keeps delivering.
      const stream = await get('/v1/events/stream', { headers: { authorization: `Bearer ${token}` } });
      const reader = stream.body!.getReader();
      const serialBefore = (await presented(port, first.ca!)).serialNumber;
      writeFileSync(certFile, renewed.cert);
      writeFileSync(keyFile, renewed.key);
      await registry.reloadTls();
      const after = await presented(port, renewed.ca!);
      expect(after.serialNumber).not.toBe(serialBefore);
      await get('/v1/slices', { method: 'POST', headers: auth, body: JSON.stringify({ name: 'tls_after', description: 'd', url: 'u' }) });
      let text = '';
      const deadline = Date.now() + 10_000;
      while (!text.includes('tls_after') && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
      expect(text).toContain('slice.created');
      expect(text).toContain('tls_after');
      await reader.cancel();
    } finally {
      await dispatcher.close();
      await registry.close();
    }
  });

  it('planetlite-registry serve reloads its certificate files on SIGHUP', async () => {
    const first = await loadTls(ownCa('hup-1', ['localhost', '127.0.0.1']));
    const renewed = await loadTls(ownCa('hup-2', ['localhost', '127.0.0.1']));
    const certFile = join(dir, 'hup.pem');
    const keyFile = join(dir, 'hup.key');
    writeFileSync(certFile, first.cert);
    writeFileSync(keyFile, first.key);
    const reg = await startRegistryProcess({ PLANETLITE_TLS_CERT: certFile, PLANETLITE_TLS_KEY: keyFile, PLANETLITE_DATA_DIR: join(dir, 'hup-data'), DATABASE_URL: await createTestDatabase(inject('pgUrl'), 'tls') }, { ca: first.ca!, timeoutMs: 60_000 });
    try {
      const port = Number(new URL(reg.url).port);
      expect((await presented(port, first.ca!)).checkIssued(new X509Certificate(first.ca!))).toBe(true);
      writeFileSync(certFile, renewed.cert);
      writeFileSync(keyFile, renewed.key);
      reg.proc.kill('SIGHUP');
      const deadline = Date.now() + 10_000;
      let issuedByRenewed = false;
      while (!issuedByRenewed && Date.now() < deadline) {
        issuedByRenewed = await presented(port, renewed.ca!).then((c) => c.checkIssued(new X509Certificate(renewed.ca!)), () => false);
        if (!issuedByRenewed) await new Promise((r) => setTimeout(r, 100));
      }
      expect(issuedByRenewed).toBe(true);
      expect(reg.proc.exitCode).toBeNull();
    } finally {
      await reg.stop();
    }
  });
});
