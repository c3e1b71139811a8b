// How a PlanetLite process trusts its registry over HTTPS: the registry's CA, pinned by the sha256
// of its public key (as kubeadm pins a cluster's CA), or else the system's CAs.
//
// The pin is checked once, against the CA the registry serves at /ca.pem; from then on every
// connection to that registry's origin (API, tracker announces, web seed, in this process: the
// built-in fetch too) verifies the server's certificate against that CA alone.
import { createHash, X509Certificate } from 'node:crypto';
import { Agent, Pool, fetch as undiciFetch, setGlobalDispatcher, type Dispatcher } from 'undici';

/** `sha256:` and 64 hex digits: the hash of a CA certificate's SubjectPublicKeyInfo (DER). */
export const CA_PIN_PATTERN = /^sha256:[0-9a-f]{64}$/;

/** Path the registry serves its CA certificate at (PEM, no auth). */
export const CA_PATH = '/ca.pem';

export class TrustError extends Error {
  readonly code: string;
  constructor(code: 'ca_pin_mismatch' | 'ca_unreachable' | 'certificate_untrusted' | 'bad_ca_pin', message: string) {
    super(message);
    this.name = 'TrustError';
    this.code = code;
  }
}

/** The PEM blocks of the certificates in text, in order. */
export function certificatesIn(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** The pin of the first certificate in pem. Throws on text that holds no certificate. */
export function caPinOf(pem: string): string {
  const first = certificatesIn(pem)[0];
  if (!first) throw new TrustError('bad_ca_pin', 'no PEM certificate found');
  const spki = new X509Certificate(first).publicKey.export({ type: 'spki', format: 'der' });
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}

/** A pin as a user typed it (upper case hex, no prefix) in its one spelling; throws when it is none. */
export function normalizePin(text: string): string {
  const t = text.trim().toLowerCase();
  const pin = t.startsWith('sha256:') ? t : `sha256:${t}`;
  if (!CA_PIN_PATTERN.test(pin)) throw new TrustError('bad_ca_pin', `a CA pin is sha256: and 64 hex digits, got '${text}'`);
  return pin;
}

/** Pinned CAs of this process by origin (https://host:port). */
const pinned = new Map<string, string>();
let dispatcher: Agent | null = null;

function originOf(url: string | URL): string {
  return new URL(String(url)).origin;
}

/**
 * How long a connection to the registry may take to open (undici's own default is 10 s). A registry
 * that a whole fleet reconnects to at once accepts connections late; one given up after 10 s was
 * still in its queue and costs it a handshake for nobody, so every agent's retry then waits longer
 * still. Each request's own timeout (a long-poll's wait plus 30 s for the agent) still ends it.
 */
const CONNECT_TIMEOUT_MS = 60_000;

/**
 * From now on, connections of this process to the origin of url trust only caPem (and the built-in
 * fetch's other origins keep the system's CAs). Replaces the global dispatcher, so no connection
 * opened before with other trust is reused.
 */
export function trustRegistry(url: string, caPem: string): void {
  if (!certificatesIn(caPem).length) throw new TrustError('bad_ca_pin', 'the registry CA holds no PEM certificate');
  const origin = originOf(url);
  if (pinned.get(origin) === caPem && dispatcher) return;
  pinned.set(origin, caPem);
  const old = dispatcher;
  dispatcher = new Agent({
    connect: { timeout: CONNECT_TIMEOUT_MS },
    factory: (o: string | URL, opts: object) => {
      const ca = pinned.get(originOf(o));
      const options = opts as Pool.Options;
      return new Pool(o, ca ? { ...options, connect: { ...(options.connect as object | undefined), ca } } : options);
    },
  });
  setGlobalDispatcher(dispatcher);
  void old?.close().catch(() => undefined);
}

/** The CA pinned for url's origin in this process, if any. */
export function trustedCaOf(url: string): string | undefined {
  return pinned.get(originOf(url));
}

/** A dispatcher that trusts only caPem, for one client that must not change the process's trust. */
export function pinnedDispatcher(caPem: string): Dispatcher {
  return new Agent({ connect: { ca: caPem } });
}

/**
 * The CA certificate the registry at url serves, fetched without checking the server's certificate:
 * only what the caller then does with the pin makes it trustworthy.
 */
export async function fetchRegistryCa(url: string, timeoutMs = 10_000): Promise<string> {
  const agent = new Agent({ connect: { rejectUnauthorized: false } });
  try {
    const res = await undiciFetch(new URL(CA_PATH, originOf(url)), { dispatcher: agent, signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    if (!res.ok || !certificatesIn(text).length) throw new TrustError('ca_unreachable', `${originOf(url)}${CA_PATH} answered ${res.status} without a CA certificate: is this a PlanetLite registry with HTTPS?`);
    return text;
  } catch (err) {
    if (err instanceof TrustError) throw err;
    throw new TrustError('ca_unreachable', `cannot fetch the registry's CA from ${originOf(url)}${CA_PATH}: ${causeOf(err)}`);
  } finally {
    await agent.close().catch(() => undefined);
  }
}

/** Fetches the registry's CA and checks it against pin; throws TrustError('ca_pin_mismatch') when it differs. */
export async function fetchPinnedCa(url: string, pin: string): Promise<string> {
  const want = normalizePin(pin);
  const pem = await fetchRegistryCa(url);
  const got = caPinOf(pem);
  if (got !== want) {
    throw new TrustError(
      'ca_pin_mismatch',
      `the registry at ${originOf(url)} presents CA ${got}, not the pinned ${want}: refusing it (another registry, or a man in the middle)`,
    );
  }
  return pem;
}

const TLS_VERIFY_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
]);

/** The TLS verification code behind a failed fetch (fetch wraps it in a TypeError's cause), or null. */
export function tlsVerifyCodeOf(err: unknown): string | null {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && TLS_VERIFY_CODES.has(code)) return code;
  }
  return null;
}

/** The innermost message of an error chain (fetch's own is only "fetch failed"). */
export function causeOf(err: unknown): string {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && (e as { cause?: unknown })?.cause; depth++) e = (e as { cause: unknown }).cause;
  const code = (e as { code?: unknown })?.code;
  const msg = e instanceof Error ? e.message : String(e);
  return typeof code === 'string' && !msg.includes(code) ? `${msg} (${code})` : msg;
}
