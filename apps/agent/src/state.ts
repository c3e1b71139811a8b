// The agent's state directory: its enrollment (node key, registry, address) and the last good
// desired state, written atomically so that a crash never leaves half a file.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { trustRegistry, type DesiredState } from '@planetlite/api';
import lockfile from 'proper-lockfile';

export interface Enrollment {
  registry: string;
  node_id: string;
  node_key: string;
  address: string;
  hostname: string;
  site: string | null;
  enrolled_at: string;
  /** The pin of the registry's CA checked at enrollment (its certificate is STATE_DIR/registry-ca.pem); absent: system CAs or plain HTTP. */
  ca_pin?: string | null;
}

export interface CachedDesiredState {
  etag: string | null;
  fetched_at: string;
  state: DesiredState;
}

export class StateDir {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  get enrollmentFile(): string {
    return join(this.dir, 'node.json');
  }
  get desiredFile(): string {
    return join(this.dir, 'desired-state.json');
  }
  /** Present while the registry has revoked this node's key: its slivers get no forwarding. */
  get revokedFile(): string {
    return join(this.dir, 'revoked');
  }
  /** The registry's CA, pinned at enrollment: the only CA this node trusts for its registry. */
  get caFile(): string {
    return join(this.dir, 'registry-ca.pem');
  }

  /** Searchable but not listable by others: unprivileged slivers' init must traverse it to
   * reach the lxcpath inside; the secrets in it are files of mode 0600. */
  ensure(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o711 });
    chmodSync(this.dir, 0o711);
  }

  readEnrollment(): Enrollment {
    if (!existsSync(this.enrollmentFile)) {
      throw new Error(`${this.enrollmentFile} is missing: enroll this node first (planetlite-agent enroll --registry URL --token TOKEN --address ADDR --state-dir ${this.dir})`);
    }
    const e = JSON.parse(readFileSync(this.enrollmentFile, 'utf8')) as Enrollment;
    if (!e.registry || !e.node_id || !e.node_key) throw new Error(`${this.enrollmentFile} is incomplete: enroll this node again`);
    return e;
  }

  writeEnrollment(e: Enrollment): void {
    this.ensure();
    atomicWrite(this.enrollmentFile, JSON.stringify(e, null, 2) + '\n', 0o600);
  }

  /** Since when the registry has revoked this node's key, or null. A new enrollment clears it. */
  revokedAt(): string | null {
    return existsSync(this.revokedFile) ? readFileSync(this.revokedFile, 'utf8').trim() || 'unknown' : null;
  }

  markRevoked(): void {
    if (!existsSync(this.revokedFile)) atomicWrite(this.revokedFile, `${new Date().toISOString()}\n`, 0o600);
  }

  clearRevoked(): void {
    rmSync(this.revokedFile, { force: true });
  }

  /** The pinned registry CA, or null when the node trusts the system's CAs (or talks plain HTTP on loopback). */
  readCa(): string | null {
    return existsSync(this.caFile) ? readFileSync(this.caFile, 'utf8') : null;
  }

  /** Makes this process trust the CA pinned at enrollment (if any) for the node's registry; returns it. */
  trustPinnedRegistry(e: Enrollment): string | null {
    const ca = this.readCa();
    if (ca) trustRegistry(e.registry, ca);
    return ca;
  }

  writeCa(pem: string | null): void {
    this.ensure();
    if (pem === null) rmSync(this.caFile, { force: true });
    else atomicWrite(this.caFile, pem, 0o644);
  }

  readDesired(): CachedDesiredState | null {
    if (!existsSync(this.desiredFile)) return null;
    try {
      return JSON.parse(readFileSync(this.desiredFile, 'utf8')) as CachedDesiredState;
    } catch {
      // A corrupt cache is worth nothing; the next pull replaces it.
      return null;
    }
  }

  /** Keeps the document on disk. text: the document's JSON as received, written as it is (a
   * document of 2,000 slivers is 1.5 MB: serialising it again took 10 ms of every change). */
  writeDesired(c: CachedDesiredState, text?: string): void {
    this.ensure();
    const json = text === undefined ? JSON.stringify(c) : `{"etag":${JSON.stringify(c.etag)},"fetched_at":${JSON.stringify(c.fetched_at)},"state":${text}}`;
    atomicWrite(this.desiredFile, json + '\n', 0o600);
  }
}

/** Write to a temporary file beside the target, then rename over it: readers see old or new, never half. */
export function atomicWrite(file: string, text: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}

/**
 * Runs fn holding the state dir's lock (STATE_DIR/lock, across processes): `run` and
 * `image import` on one node must never create, format or mount the pool at the same time, nor
 * both rewrite images.json. A holder that died leaves a lock that goes stale after 10 s.
 */
export async function withStateLock<T>(stateDir: string, what: string, fn: () => Promise<T>): Promise<T> {
  mkdirSync(stateDir, { recursive: true, mode: 0o711 });
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(stateDir, { lockfilePath: join(stateDir, 'lock'), stale: 10_000, retries: { retries: 60, minTimeout: 100, maxTimeout: 1000 } });
  } catch (err) {
    throw new Error(`${what}: another planetlite-agent process holds ${join(stateDir, 'lock')} (${err instanceof Error ? err.message : String(err)}); try again when it is done`, { cause: err });
  }
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}
