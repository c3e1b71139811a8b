// A sliver's host key must load in OpenSSH whatever its bytes: ssh2's generator broke one key in
// 256 (a public key starting with a zero byte), and that sliver's sshd never started.
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ed25519HostKey, openSshFiles, type HostKey } from '../src/hostkey.js';

const dir = mkdtempSync(join(tmpdir(), 'pl-hostkey-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The public key line (with its comment) OpenSSH derives from the private key file; it fails on a file it cannot load. */
function opensshPublic(key: HostKey): string {
  const file = join(dir, 'key');
  writeFileSync(file, key.private, { mode: 0o600 });
  return execFileSync('ssh-keygen', ['-y', '-f', file], { encoding: 'utf8' }).trim();
}

/** The raw public key of an ed25519 seed. */
function publicOf(seed: Buffer): Buffer {
  const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]); // PKCS#8 of a raw seed
  return Buffer.from(createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' }).x!, 'base64url');
}

describe('sliver host keys', () => {
  it('a public key that starts with a zero byte loads in OpenSSH', () => {
    // The first counter seed whose public key starts with 0x00.
    let seed = Buffer.alloc(32);
    for (let i = 0; publicOf(seed)[0] !== 0; i++) seed = Buffer.alloc(32), seed.writeUInt32BE(i);
    const pub = publicOf(seed);
    expect(pub[0]).toBe(0);
    expect(pub).toHaveLength(32);
    const key = openSshFiles(seed, pub, 'sliver host key', Buffer.from([1, 2, 3, 4]));
    expect(opensshPublic(key)).toBe(key.public);
  });

  it('every generated key loads, and its public line is the one OpenSSH derives', () => {
    for (let i = 0; i < 64; i++) {
      const key = ed25519HostKey('sliver host key');
      expect(key.public).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]{43} sliver host key$/);
      expect(opensshPublic(key)).toBe(key.public);
    }
  });

  it('refuses keys of the wrong size', () => {
    expect(() => openSshFiles(Buffer.alloc(31), Buffer.alloc(32), 'c', Buffer.alloc(4))).toThrow(/32 bytes/);
  });
});
