// Passwords (scrypt) and bearer secrets (random, stored as sha256) for users, nodes and enrollment.
import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const scrypt = (pw: string, salt: Buffer, len: number, opts: ScryptOptions) =>
  new Promise<Buffer>((res, rej) => scryptCb(pw, salt, len, opts, (err, key) => (err ? rej(err) : res(key))));

const N = 16384, R = 8, P = 1, LEN = 32;

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, LEN, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [alg, n, r, p, salt, key] = stored.split('$');
  if (alg !== 'scrypt' || !salt || !key) return false;
  const want = Buffer.from(key, 'base64url');
  const got = await scrypt(password, Buffer.from(salt, 'base64url'), want.length, { N: Number(n), r: Number(r), p: Number(p) });
  return timingSafeEqual(want, got);
}

/** Kinds of bearer secret, told apart by prefix so a leaked one is recognisable. */
export type SecretKind = 'user' | 'node' | 'enroll';
const PREFIX: Record<SecretKind, string> = { user: 'plu_', node: 'pln_', enroll: 'ple_' };

export function newSecret(kind: SecretKind): string {
  return PREFIX[kind] + randomBytes(32).toString('base64url');
}

export function secretKind(secret: string): SecretKind | null {
  for (const [kind, prefix] of Object.entries(PREFIX)) if (secret.startsWith(prefix)) return kind as SecretKind;
  return null;
}

/** Secrets carry 256 random bits, so one fast hash is enough to make the stored copy useless. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}
