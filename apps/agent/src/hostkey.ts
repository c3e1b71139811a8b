// A sliver's ed25519 host key in OpenSSH's own files, made in this process (no ssh-keygen to
// start on a new sliver's way up). Not ssh2's generateKeyPairSync: it strips leading zero bytes
// off the 32-byte public key, so one key in 256 is one sshd refuses to load ("error in
// libcrypto"), and that sliver runs with no sshd (mscdex/ssh2 issues 1390 and 1513).
import { generateKeyPairSync, randomBytes } from 'node:crypto';

const TYPE = 'ssh-ed25519';

export interface HostKey {
  /** The private key file (`-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted). */
  private: string;
  /** The public key line, `ssh-ed25519 AAAA… comment`. */
  public: string;
}

export function ed25519HostKey(comment: string): HostKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  // JWK gives the raw 32 bytes of each, whatever their leading bytes.
  const pub = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url');
  const seed = Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url');
  return openSshFiles(seed, pub, comment, randomBytes(4));
}

/** The files of a key pair (the layout of PROTOCOL.key in OpenSSH's sources). */
export function openSshFiles(seed: Buffer, pub: Buffer, comment: string, check: Buffer): HostKey {
  if (seed.length !== 32 || pub.length !== 32) throw new Error(`ed25519 keys are 32 bytes (seed ${seed.length}, public ${pub.length})`);
  const blob = Buffer.concat([str(TYPE), str(pub)]);
  const section = Buffer.concat([check, check, str(TYPE), str(pub), str(Buffer.concat([seed, pub])), str(comment)]);
  // Padded with 1, 2, 3, … to the cipher's block size (8 for "none").
  const pad = Buffer.from(Array.from({ length: (8 - (section.length % 8)) % 8 }, (_, i) => i + 1));
  const body = Buffer.concat([Buffer.from('openssh-key-v1\0'), str('none'), str('none'), str(''), u32(1), str(blob), str(Buffer.concat([section, pad]))]);
  const lines = body.toString('base64').match(/.{1,70}/g)!;
  return {
    private: ['-----BEGIN OPENSSH PRIVATE KEY-----', ...lines, '-----END OPENSSH PRIVATE KEY-----', ''].join('\n'),
    public: `${TYPE} ${blob.toString('base64')} ${comment}`,
  };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function str(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return Buffer.concat([u32(b.length), b]);
}
