import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isKeyLine, resolveKeyArgument } from './keys.js';

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq4Zc0c2Cw6H1v7y1mYc6cSx3bq6f1m0m8o4m9oQ4aZ alice@laptop';
const RSA = 'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'planetlite-cli-keys-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('isKeyLine', () => {
  it('recognises OpenSSH public key lines', () => {
    expect(isKeyLine(ED25519)).toBe(true);
    expect(isKeyLine(RSA)).toBe(true);
    expect(isKeyLine('ecdsa-sha2-nistp256 AAAAE2VjZHNh=')).toBe(true);
    expect(isKeyLine('sk-ssh-ed25519@openssh.com AAAAGnNr')).toBe(true);
    expect(isKeyLine('/home/alice/.ssh/id_ed25519.pub')).toBe(false);
    expect(isKeyLine('ssh-ed25519')).toBe(false);
    expect(isKeyLine('ssh-foo AAAA')).toBe(false);
  });
});

describe('resolveKeyArgument', () => {
  it('takes a key line as it is', async () => {
    expect(await resolveKeyArgument(`  ${ED25519}\n`)).toBe(ED25519);
  });

  it('reads a .pub file, skipping blank lines and comments', async () => {
    const path = join(dir, 'id.pub');
    await writeFile(path, `# my key\n\n${ED25519}\n`);
    expect(await resolveKeyArgument(path)).toBe(ED25519);
  });

  it('refuses a private key and points at the .pub', async () => {
    const path = join(dir, 'id_ed25519');
    await writeFile(path, '-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n');
    await expect(resolveKeyArgument(path)).rejects.toThrow(`${path} is a private key; pass the public half (${path}.pub)`);
  });

  it('refuses files with several keys, no key, or something else', async () => {
    const many = join(dir, 'many.pub');
    await writeFile(many, `${ED25519}\n${RSA}\n`);
    await expect(resolveKeyArgument(many)).rejects.toThrow('holds 2 lines');
    const empty = join(dir, 'empty.pub');
    await writeFile(empty, '\n# nothing\n');
    await expect(resolveKeyArgument(empty)).rejects.toThrow('holds no public key');
    const junk = join(dir, 'junk.pub');
    await writeFile(junk, 'hello world\n');
    await expect(resolveKeyArgument(junk)).rejects.toThrow('does not hold an OpenSSH public key line');
  });

  it('says when the argument is neither a file nor a key', async () => {
    await expect(resolveKeyArgument(join(dir, 'nope.pub'))).rejects.toThrow('no such file, and not an OpenSSH public key line');
    await expect(resolveKeyArgument('not a key')).rejects.toThrow('no such file');
    const sub = join(dir, 'sub');
    await mkdir(sub);
    await expect(resolveKeyArgument(sub)).rejects.toThrow('is a directory');
  });

  it('uses the injected reader', async () => {
    expect(await resolveKeyArgument('whatever.pub', async () => `${RSA}\n`)).toBe(RSA);
  });
});
