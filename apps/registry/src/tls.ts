// The registry's HTTPS identity: its own CA and a server certificate signed by it (made on first
// start, kept under the data dir and reused), or an operator's certificate files.
import { createHash, createPrivateKey, createPublicKey, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import { chmodSync, existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
// @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { caPinOf, certificatesIn } from '@planetlite/api';
import type { Logger } from '@planetlite/core';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type KeyPair = webcrypto.CryptoKeyPair;

export interface TlsConfig {
  /** own-ca: the registry's CA under dir (or in memory without one); files: the operator's; off: plain HTTP. */
  mode: 'own-ca' | 'files' | 'off';
  /** With own-ca: where the CA and server certificate live (0700; keys 0600). Absent: made in memory (tests). */
  dir: string | undefined;
  certFile: string | undefined;
  keyFile: string | undefined;
  /** With files: the CA nodes pin (default: the last certificate of the chain in certFile, if more than one). */
  caFile: string | undefined;
  /** Names and addresses the server certificate must carry (own-ca). */
  sans: string[];
}

export interface TlsMaterial {
  key: string;
  /** The server certificate, followed by its chain (with own-ca: the CA). */
  cert: string;
  /** The CA nodes and users pin; null when there is none to pin (an operator's public certificate). */
  ca: string | null;
  caPin: string | null;
  /** The names and addresses the server certificate is valid for. */
  sans: string[];
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
/** A server certificate this close to expiry is issued anew at start (and on SIGHUP). */
const RENEW_BEFORE_DAYS = 30;

/** Loads (own-ca: and if need be makes or renews) the registry's TLS material. */
export async function loadTls(cfg: TlsConfig, log?: Logger): Promise<TlsMaterial> {
  if (cfg.mode === 'off') throw new Error('loadTls: TLS is off');
  if (cfg.mode === 'files') return loadFiles(cfg);
  return ownCa(cfg, log);
}

function loadFiles(cfg: TlsConfig): TlsMaterial {
  const read = (file: string | undefined, what: string) => {
    if (!file) throw new Error(`--tls-${what} is required with --tls-cert and --tls-key`);
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`cannot read the TLS ${what} file ${file}: ${(err as Error).message}`);
    }
  };
  const cert = read(cfg.certFile, 'cert');
  const key = read(cfg.keyFile, 'key');
  const chain = certificatesIn(cert);
  if (!chain.length) throw new Error(`${cfg.certFile} holds no PEM certificate`);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) throw new Error(`${cfg.keyFile} holds no PEM private key`);
  const leaf = new NodeX509(chain[0] as string);
  if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error(`${cfg.keyFile} is not the key of the certificate in ${cfg.certFile}`);
  const ca = cfg.caFile ? read(cfg.caFile, 'ca') : chain.length > 1 ? (chain.at(-1) as string) : null;
  return { key, cert, ca, caPin: ca ? caPinOf(ca) : null, sans: sansOf(leaf) };
}

async function ownCa(cfg: TlsConfig, log?: Logger): Promise<TlsMaterial> {
  const dir = cfg.dir;
  if (dir) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = (name: string) => (dir ? join(dir, name) : null);
  const read = (name: string) => {
    const f = file(name);
    return f && existsSync(f) ? readFileSync(f, 'utf8') : null;
  };
  const write = (name: string, text: string) => {
    const f = file(name);
    if (!f) return;
    writeFileSync(`${f}.tmp`, text, { mode: 0o600 });
    chmodSync(`${f}.tmp`, 0o600);
    renameSync(`${f}.tmp`, f);
  };

  // The CA's key is created exclusively (link fails on an existing file), so replicas sharing the
  // dir that start together end up with one CA. The pin is the key's: a CA certificate lost after
  // its key was written is made again from that key, with the same pin.
  let caKeyPem = read('ca-key.pem');
  if (!caKeyPem) {
    const made = await makeKey();
    const f = file('ca-key.pem');
    if (!f) caKeyPem = made;
    else {
      writeFileSync(`${f}.${process.pid}.tmp`, made, { mode: 0o600 });
      try {
        linkSync(`${f}.${process.pid}.tmp`, f);
        caKeyPem = made;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        caKeyPem = readFileSync(f, 'utf8');
        for (let i = 0; i < 50 && !read('ca.pem'); i++) await new Promise((r) => setTimeout(r, 100));
      } finally {
        rmSync(`${f}.${process.pid}.tmp`, { force: true });
      }
    }
  }
  let caPem = read('ca.pem');
  if (!caPem || caPinOf(caPem) !== pinOfKey(caKeyPem)) {
    caPem = await makeCa(caKeyPem);
    write('ca.pem', caPem);
    log?.info({ dir, ca_pin: caPinOf(caPem) }, 'made the registry CA');
  }

  const wanted = [...new Set(cfg.sans)];
  let certPem = read('server.pem');
  let keyPem = read('server-key.pem');
  const current = certPem ? new NodeX509(certificatesIn(certPem)[0] as string) : null;
  const stale =
    !current ||
    !keyPem ||
    current.checkIssued(new NodeX509(caPem)) === false ||
    Date.parse(current.validTo) - Date.now() < RENEW_BEFORE_DAYS * DAY ||
    !wanted.every((n) => sansOf(current).includes(normalizeSan(n)));
  if (stale) {
    // Keep what the old certificate covered too: an earlier --tls-san stays valid for nodes that use it.
    const sans = [...new Set([...(current ? sansOf(current) : []), ...wanted.map(normalizeSan)])];
    ({ certPem, keyPem } = await makeServerCert(caPem, caKeyPem, sans));
    write('server-key.pem', keyPem);
    write('server.pem', certPem);
    log?.info({ sans }, 'issued the registry server certificate');
  }
  const leaf = new NodeX509(certificatesIn(certPem as string)[0] as string);
  return { key: keyPem as string, cert: `${certPem as string}${caPem}`, ca: caPem, caPin: caPinOf(caPem), sans: sansOf(leaf) };
}

function serial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] as number) & 0x7f; // positive
  return Buffer.from(b).toString('hex');
}

function pemKey(der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN PRIVATE KEY-----\n${b64.replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
}

async function makeKey(): Promise<string> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as KeyPair;
  return pemKey(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
}

/** The pin (sha256 of the public key) of a PEM private key. */
function pinOfKey(keyPem: string): string {
  const spki = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}

/** A self-signed CA certificate for the key (PEM, PKCS#8). */
async function makeCa(keyPem: string): Promise<string> {
  const pub = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
  const keys = {
    privateKey: await importSigningKey(keyPem),
    publicKey: await webcrypto.subtle.importKey('spki', pub, ALG, true, ['verify']),
  } as KeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=PlanetLite registry CA ${new Date(now).toISOString().slice(0, 10)}`,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 20 * 365 * DAY),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return `${cert.toString('pem')}\n`;
}

function importSigningKey(keyPem: string) {
  const der = Buffer.from(keyPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  return webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign']);
}

async function makeServerCert(caPem: string, caKeyPem: string, sans: string[]): Promise<{ certPem: string; keyPem: string }> {
  const ca = new x509.X509Certificate(caPem);
  const caKey = await importSigningKey(caKeyPem);
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as KeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${sans.find((s) => !isIP(s)) ?? sans[0] ?? 'planetlite-registry'}`,
    issuer: ca.subject,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 2 * 365 * DAY),
    signingAlgorithm: ALG,
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(sans.map((s) => (isIP(s) ? { type: 'ip' as const, value: s } : { type: 'dns' as const, value: s }))),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
    ],
  });
  return { certPem: `${cert.toString('pem')}\n`, keyPem: pemKey(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) };
}

/** An address or name as the certificate spells it (IPv6 in Node's compressed form, names lower case). */
function normalizeSan(s: string): string {
  const t = s.trim().replace(/^\[|\]$/g, '');
  if (isIP(t) === 6) return expand6(t);
  return isIP(t) ? t : t.toLowerCase();
}

/** Node prints IPv6 SANs fully expanded, upper case (e.g. 0:0:0:0:0:0:0:1). */
function expand6(a: string): string {
  const [head = '', tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = a.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return groups.map((g) => parseInt(g, 16).toString(16).toUpperCase()).join(':');
}

/** The DNS names and IP addresses a certificate is valid for. */
export function sansOf(cert: NodeX509): string[] {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .map((e) => /^(?:DNS|IP Address):(.+)$/.exec(e)?.[1])
    .filter((v): v is string => !!v)
    .map(normalizeSan);
}
