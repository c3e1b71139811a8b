// Turns the argument of "key add" into one OpenSSH public key line: a key line or a .pub file.
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { CliError } from './errors.js';

const KEY_TYPE = /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)(-cert-v01@openssh\.com)?$/;

/** True when text looks like "<type> <base64> [comment]". */
export function isKeyLine(text: string): boolean {
  const [type, blob] = text.trim().split(/\s+/);
  return !!type && !!blob && KEY_TYPE.test(type) && /^[A-Za-z0-9+/]+={0,3}$/.test(blob);
}

/** The single key line in a file's text: blank lines and # comments are skipped. */
export function keyLineOf(text: string, source: string): string {
  if (/^-----BEGIN [A-Z ]*PRIVATE KEY-----/m.test(text)) {
    throw new CliError(`${source} is a private key; pass the public half (${source}.pub)`);
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  if (lines.length === 0) throw new CliError(`${source} holds no public key`);
  if (lines.length > 1) throw new CliError(`${source} holds ${lines.length} lines; add one key at a time`);
  const line = lines[0]!;
  if (!isKeyLine(line)) throw new CliError(`${source} does not hold an OpenSSH public key line (e.g. "ssh-ed25519 AAAA... you@host")`);
  return line;
}

/**
 * The argument is taken as a key line when it looks like one, else as a path ("~/" expanded).
 * readText is injectable for tests and defaults to reading the file.
 */
export async function resolveKeyArgument(
  arg: string,
  readText: (path: string) => Promise<string> = (p) => readFile(p, 'utf8'),
): Promise<string> {
  const trimmed = arg.trim();
  if (isKeyLine(trimmed)) return trimmed.split(/\r?\n/)[0]!.trim();
  const path = trimmed.startsWith('~/') ? homedir() + trimmed.slice(1) : trimmed;
  let text: string;
  try {
    text = await readText(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CliError(`${arg}: no such file, and not an OpenSSH public key line`);
    if (code === 'EISDIR') throw new CliError(`${arg} is a directory; pass a .pub file`);
    throw new CliError(`cannot read ${arg}: ${(err as Error).message}`);
  }
  return keyLineOf(text, arg);
}
