// Names that become paths in the pool are checked here first, so nothing else can reach a path.
import { StorageError } from './errors.js';

const SLIVER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SHA256 = /^[0-9a-f]{64}$/;

export function isSliverId(value: string): boolean {
  return SLIVER_ID.test(value);
}

export function isSha256(value: string): boolean {
  return SHA256.test(value);
}

/** A sliver id (a UUID) in its canonical lower-case form, or a StorageError. */
export function sliverId(value: string): string {
  const id = typeof value === 'string' ? value.toLowerCase() : '';
  if (!isSliverId(id)) throw new StorageError('invalid_id', `not a sliver id (a UUID): ${JSON.stringify(value)}`);
  return id;
}

/** A sha256 digest as 64 lower-case hex digits, or a StorageError. */
export function sha256Digest(value: string): string {
  const sha = typeof value === 'string' ? value.toLowerCase() : '';
  if (!isSha256(sha)) throw new StorageError('invalid_id', `not a sha256 digest (64 hex digits): ${JSON.stringify(value)}`);
  return sha;
}
