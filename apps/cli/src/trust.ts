// Trusting a registry like ssh trusts a host: the first login shows the registry CA's pin and asks
// (or takes --ca-pin), the answer is kept in the config file under known_registries, and from then
// on only that CA is trusted for the registry; a registry that presents another is refused loudly.
import { createInterface } from 'node:readline/promises';
import { caPinOf, fetchRegistryCa, normalizePin, tlsVerifyCodeOf, trustRegistry, TrustError } from '@planetlite/api';
import type { CliConfig, KnownRegistry } from './config.js';
import { CliError } from './errors.js';
import type { Io } from './io.js';

export function originOf(registry: string): string {
  return new URL(registry).origin;
}

/** Makes this process trust the registry's pinned CA, if the user accepted one. */
export function applyKnownTrust(config: CliConfig, registry: string): KnownRegistry | undefined {
  const known = config.known_registries?.[originOf(registry)];
  if (known) trustRegistry(registry, known.ca);
  return known;
}

/** Turns a TLS verification failure into the one line the user needs; other errors pass through. */
export async function explainTlsFailure(err: unknown, registry: string, known: KnownRegistry | undefined): Promise<never> {
  const code = tlsVerifyCodeOf(err);
  if (!code) throw err;
  if (known) {
    const now = await fetchRegistryCa(registry).then(caPinOf, () => 'unknown');
    throw new CliError(
      `REGISTRY CERTIFICATE CHANGED: ${originOf(registry)} presents a certificate that the CA you trusted (${known.ca_pin}) did not sign (${code}); its CA now is ${now}. ` +
        `Someone may be impersonating the registry. If its admin confirms a new CA, run: planetlite login --ca-pin ${now === 'unknown' ? 'sha256:…' : now} --email …`,
    );
  }
  throw new CliError(`the registry's certificate at ${originOf(registry)} is not trusted (${code}): run planetlite login to check and pin its CA`);
}

export interface PinOptions {
  /** --ca-pin: the pin the user got from the registry's admin. */
  caPin?: string | undefined;
  io: Io;
  /** A call that fails on an untrusted certificate (GET /healthz). */
  probe: () => Promise<unknown>;
}

/**
 * Decides how to trust the registry at login: the known CA, the system's CAs, or a CA shown to the
 * user (pin checked against --ca-pin, or accepted at a prompt). Returns the entry to remember, or
 * null when the system's CAs (or plain HTTP) suffice.
 */
export async function pinAtLogin(config: CliConfig, registry: string, opts: PinOptions): Promise<KnownRegistry | null> {
  const wanted = opts.caPin === undefined ? undefined : normalizePinOrFail(opts.caPin);
  if (new URL(registry).protocol !== 'https:') {
    if (wanted) throw new CliError('--ca-pin needs an https:// registry URL');
    return null;
  }
  const known = config.known_registries?.[originOf(registry)];
  if (known && (!wanted || wanted === known.ca_pin)) {
    trustRegistry(registry, known.ca);
    await opts.probe().catch((err: unknown) => explainTlsFailure(err, registry, known));
    return known;
  }
  if (!wanted) {
    // A certificate the system's CAs vouch for (say, from an ACME client) needs no pin.
    const systemTrusted = await opts.probe().then(
      () => true,
      (err: unknown) => {
        if (tlsVerifyCodeOf(err)) return false;
        throw err;
      },
    );
    if (systemTrusted) return null;
  }
  const ca = await fetchRegistryCa(registry).catch((err: unknown) => {
    throw new CliError(err instanceof TrustError ? err.message : String(err));
  });
  const pin = caPinOf(ca);
  if (wanted && pin !== wanted) {
    throw new CliError(`the registry at ${originOf(registry)} presents CA ${pin}, not ${wanted}: refusing it (another registry, or a man in the middle)`);
  }
  if (!wanted) await confirm(opts.io, registry, pin);
  trustRegistry(registry, ca);
  await opts.probe().catch((err: unknown) => {
    if (tlsVerifyCodeOf(err)) throw new CliError(`the registry at ${originOf(registry)} serves CA ${pin} but presents a certificate it did not sign: refusing it`);
    throw err;
  });
  return { ca_pin: pin, ca, trusted_at: new Date().toISOString() };
}

function normalizePinOrFail(text: string): string {
  try {
    return normalizePin(text);
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

async function confirm(io: Io, registry: string, pin: string): Promise<void> {
  const stdin = io.stdin;
  const question =
    `The registry at ${originOf(registry)} has a CA this machine does not know:\n  ${pin}\n` +
    `Check it with the registry's admin (it is logged when the registry starts and printed by planetlite site token).\n`;
  if (!stdin?.isTTY) {
    throw new CliError(`the registry at ${originOf(registry)} has an unknown CA ${pin}: check it with the registry's admin, then pass --ca-pin ${pin}`);
  }
  io.stderr.write(question);
  const rl = createInterface({ input: stdin, output: io.stderr as NodeJS.WritableStream, terminal: false });
  try {
    const answer = (await rl.question('Trust it and remember it? [y/N] ')).trim().toLowerCase();
    if (answer !== 'y' && answer !== 'yes') throw new CliError('not trusted: nothing was saved');
  } finally {
    rl.close();
  }
}
