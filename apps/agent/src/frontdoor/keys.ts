// The front door's two keys, made once in STATE_DIR/front-door (root only, mode 0700): its host
// key, which users pin, and the client key with which it logs in to slivers' own sshd.
import { existsSync, mkdirSync, chmodSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { run } from '@planetlite/host';

export interface FrontDoorKeys {
  /** Private host key (OpenSSH format). */
  hostKey: string;
  /** `ssh-ed25519 AAAA…` of the host key, as known_hosts and the registry carry it. */
  hostPublic: string;
  /** SHA256:… as `ssh-keygen -l` prints it. */
  hostFingerprint: string;
  /** Private client key for the slivers' sshd. */
  clientKey: string;
  clientPublic: string;
}

export const frontDoorDir = (stateDir: string): string => join(stateDir, 'front-door');

/** Makes the keys the first time; later calls (restarts, upgrades) read the same ones. */
export async function ensureFrontDoorKeys(stateDir: string): Promise<FrontDoorKeys> {
  const dir = frontDoorDir(stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const make = async (name: string, comment: string) => {
    const file = join(dir, name);
    if (!existsSync(file)) await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
    return { key: readFileSync(file, 'utf8'), pub: readFileSync(`${file}.pub`, 'utf8').trim().split(/\s+/).slice(0, 2).join(' ') };
  };
  const host = await make('host_ed25519', 'planetlite front door host key');
  const client = await make('client_ed25519', 'planetlite front door');
  return { hostKey: host.key, hostPublic: host.pub, hostFingerprint: fingerprintOf(host.pub), clientKey: client.key, clientPublic: client.pub };
}

/** SHA256 fingerprint of an OpenSSH public key line or of its wire blob. */
export function fingerprintOf(key: string | Buffer): string {
  const blob = typeof key === 'string' ? Buffer.from(key.trim().split(/\s+/)[1] ?? '', 'base64') : key;
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/**
 * The line that lets the front door into one sliver: only from the node's end of that sliver's
 * own link, so another sliver (or anything else) holding a copy could not use it.
 */
export function frontDoorAuthorizedLine(clientPublic: string, hostAddress: string): string {
  return `from="${hostAddress}" ${clientPublic} planetlite-front-door`;
}

/** The public key blobs of OpenSSH key lines; lines ssh2 cannot parse are left out. */
export function keyBlobs(lines: readonly string[]): Buffer[] {
  const out: Buffer[] = [];
  for (const line of lines) {
    const parsed = ssh2.utils.parseKey(line);
    if (parsed instanceof Error) continue;
    const key = Array.isArray(parsed) ? parsed[0] : parsed;
    if (key) out.push(key.getPublicSSH());
  }
  return out;
}
