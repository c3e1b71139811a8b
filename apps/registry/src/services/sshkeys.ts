// Checks an OpenSSH public key line with ssh2's parser and computes its SHA256 fingerprint.
import { createHash } from 'node:crypto';
import ssh2 from 'ssh2';
import { AppError } from '@planetlite/core';

const TYPES = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

export interface ParsedKey {
  type: string;
  key: string;
  fingerprint: string;
  comment: string;
}

export function parsePublicKey(line: string): ParsedKey {
  const trimmed = line.trim();
  if (/[\r\n]/.test(trimmed)) throw new AppError('invalid_request', 'key must be a single OpenSSH public key line');
  const [type, b64, ...rest] = trimmed.split(/\s+/);
  if (!type || !b64) throw new AppError('invalid_request', 'key must look like "ssh-ed25519 AAAA… comment"');
  if (!TYPES.has(type)) throw new AppError('invalid_request', `key type '${type}' is not supported (use ssh-ed25519, ssh-rsa or ecdsa)`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new AppError('invalid_request', 'key data is not valid base64');
  const parsed = ssh2.utils.parseKey(`${type} ${b64}`);
  if (parsed instanceof Error || Array.isArray(parsed) || parsed.type !== type || parsed.isPrivateKey()) {
    throw new AppError('invalid_request', `key is not a valid ${type} public key`);
  }
  const blob = Buffer.from(b64, 'base64');
  if (type === 'ssh-rsa' && rsaBits(blob) < 2048) throw new AppError('invalid_request', 'RSA keys must have at least 2048 bits');
  const fingerprint = 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
  const comment = rest.join(' ').slice(0, 200);
  return { type, key: comment ? `${type} ${b64} ${comment}` : `${type} ${b64}`, fingerprint, comment };
}

// The RSA blob is string(type) mpint(e) mpint(n); the modulus length gives the key size.
function rsaBits(blob: Buffer): number {
  let off = 0;
  const next = (): Buffer => {
    const len = blob.readUInt32BE(off);
    const out = blob.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    return out;
  };
  try {
    next();
    next();
    const n = next();
    let i = 0;
    while (i < n.length && n[i] === 0) i++;
    return (n.length - i) * 8;
  } catch {
    return 0;
  }
}
