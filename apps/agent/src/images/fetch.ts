// Images over BitTorrent (CoreLab §6.3): a node fetches an image's archive from its peers and the
// registry's seeder, with the registry's HTTP web seed as the fallback, checks the sha256 the
// registry published before anything is imported, and keeps seeding it to other nodes.
import { mkdirSync, readdirSync, rmSync, existsSync, createWriteStream } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import WebTorrent, { type Torrent, type Wire } from 'webtorrent';
import { trustRegistry, type NodeImage } from '@planetlite/api';
import { askAgain, batchUpdates, isRegistryPeer, preferPeers, reannounce, skipAddresses, startAtRandomPiece } from '@planetlite/torrent';
import type { Logger } from '@planetlite/core';
import { isStorageError } from '@planetlite/storage';
import { sha256File } from './records.js';

export interface FetchTarget {
  name: string;
  sha256: string;
  magnet: string | null;
  webSeed: string | null;
}

type FetchState = 'fetching' | 'verifying' | 'importing' | 'ready' | 'failed';

interface Entry {
  target: FetchTarget;
  state: FetchState;
  error: string | null;
  torrent: Torrent | null;
  startedAt: number;
  /** Bytes from other nodes and from the registry's seeder over BitTorrent; the rest of what the
   * torrent downloaded came from the web seed. httpBytes: a plain HTTP download. */
  peerBytes: number;
  registryBytes: number;
  httpBytes: number;
  /** Pieces that failed their SHA-1 check in this attempt (a corrupt or tampered source). */
  badPieces: number;
  attempts: number;
  retry: NodeJS.Timeout | null;
}

export interface ImageFetcherOptions {
  /** Where archives are downloaded and kept for seeding. */
  dir: string;
  log: Logger;
  /** Upload cap for seeding to other nodes, kbit/s; null: none. */
  uploadKbps: number | null;
  /** The registry's pinned CA: its tracker and web seed are trusted with it alone (absent: system CAs). */
  registryCa?: string | null;
  /** Imports a verified archive (storage pool + image index). */
  onReady: (target: FetchTarget, file: string) => Promise<void>;
  /** An image was fetched, verified and imported, or its fetch failed. */
  onChange: (image: string, state: FetchState, detail: Record<string, unknown>) => void;
  /** Without torrent metadata after this long, fetch the archive over plain HTTP instead. */
  metadataTimeoutMs?: number;
  /** No byte from any peer or the registry's seeder for this long: add the web seed (default 5 s). */
  stallMs?: number;
  /** No byte from any source, the web seed included, for this long: the attempt fails and is
   * retried (default 20 s). The pieces already on disk are kept for the retry. */
  giveUpMs?: number;
  /** First retry after a failure; doubles up to 5 min. */
  retryMs?: number;
  /** An attempt fails after this many pieces failed their hash check (default 4). */
  maxBadPieces?: number;
}

const HTTP_FILE = 'archive.http';
const TICK_MS = 1000;
/** Re-announce every this many ticks while fetching. */
const REANNOUNCE_TICKS = 3;

let addressesAt = 0;
let addresses = new Set<string>();
/** This machine's addresses (its network namespace's), looked up at most every 10 s. */
function ownAddresses(): Set<string> {
  if (Date.now() - addressesAt > 10_000) {
    addressesAt = Date.now();
    addresses = new Set(Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address)));
  }
  return addresses;
}
export class ImageFetcher {
  readonly #o: ImageFetcherOptions;
  readonly #client: WebTorrent;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(opts: ImageFetcherOptions) {
    this.#o = opts;
    mkdirSync(opts.dir, { recursive: true });
    // Only the registry's tracker: no DHT, local discovery or NAT traversal, and plain TCP.
    this.#client = new WebTorrent({
      dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false,
      // The web seed is a fallback, added to a torrent when it stalls (#start), not a source
      // from the start: it draws on the same registry uplink as the seeder, whole pieces at a time.
      webSeeds: false,
      ...(opts.uploadKbps ? { uploadLimit: Math.round((opts.uploadKbps * 1000) / 8) } : {}),
    });
    this.#client.on('error', (err: Error) => opts.log.warn({ err: err.message }, 'bittorrent client error'));
  }

  /** Starts fetching an image unless it is being fetched, ready, or waiting for its retry. */
  want(target: FetchTarget): void {
    if (this.#closed) return;
    this.#trust(target);
    const known = this.#entries.get(target.name);
    if (known && known.target.sha256 === target.sha256) return;
    if (known) this.#drop(known);
    const entry: Entry = { target, state: 'fetching', error: null, torrent: null, startedAt: Date.now(), peerBytes: 0, registryBytes: 0, httpBytes: 0, badPieces: 0, attempts: 0, retry: null };
    this.#entries.set(target.name, entry);
    this.#start(entry);
  }

  /**
   * Seeds an image this node already imported, from the archive it kept (after an agent restart,
   * say): webtorrent checks the pieces on disk, then serves them. Nothing is imported again.
   */
  seed(target: FetchTarget): void {
    if (this.#closed || !target.magnet || this.#entries.has(target.name)) return;
    this.#trust(target);
    const path = join(this.#o.dir, target.sha256);
    // An archive that came over plain HTTP is not laid out as the torrent names it: not seeded.
    if (!existsSync(path) || existsSync(join(path, HTTP_FILE))) return;
    const entry: Entry = { target, state: 'ready', error: null, torrent: null, startedAt: Date.now(), peerBytes: 0, registryBytes: 0, httpBytes: 0, badPieces: 0, attempts: 0, retry: null };
    this.#entries.set(target.name, entry);
    entry.torrent = this.#client.add(target.magnet, { path });
    this.#notToSelf(entry.torrent);
    entry.torrent.on('error', (err: Error) => this.#o.log.warn({ image: target.name, err: err.message }, 'seeding failed'));
  }

  /**
   * The tracker and web seed URLs came from the registry over the pinned connection; they may name
   * it otherwise than the node does (its public URL), so they get the same CA.
   */
  #trust(target: FetchTarget): void {
    const ca = this.#o.registryCa;
    if (!ca) return;
    const trackers = target.magnet ? new URLSearchParams(target.magnet.replace(/^magnet:\?/, '')).getAll('tr') : [];
    for (const url of [...trackers, target.webSeed]) if (url && URL.canParse(url) && url.startsWith('https:')) trustRegistry(url, ca);
  }

  /** Stops fetching or seeding an image and deletes its archive (image garbage collection). */
  forget(name: string, sha256: string): void {
    const e = this.#entries.get(name);
    if (e) this.#drop(e);
    rmSync(join(this.#o.dir, sha256), { recursive: true, force: true });
  }

  /** Archives kept here, by sha256 (garbage collection finds the ones no image record names). */
  archives(): string[] {
    return existsSync(this.#o.dir) ? readdirSync(this.#o.dir).filter((f) => /^[0-9a-f]{64}$/.test(f)) : [];
  }

  /** One image's state, or undefined when it was never asked for. */
  state(name: string): { state: FetchState; error: string | null; progress: number } | undefined {
    const e = this.#entries.get(name);
    return e && { state: e.state, error: e.error, progress: this.#progress(e) };
  }

  /** Every image's fetch, for the node's observed state (API.md: images on the node). */
  report(): NodeImage[] {
    return [...this.#entries.values()].map((e) => {
      return { image: e.target.name, state: e.state, progress: this.#progress(e), ...this.#sources(e) };
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const e of this.#entries.values()) if (e.retry) clearTimeout(e.retry);
    await new Promise<void>((resolve) => this.#client.destroy(() => resolve()));
  }

  #progress(e: Entry): number {
    if (e.state === 'ready') return 1;
    return e.torrent ? Math.round(e.torrent.progress * 1000) / 1000 : 0;
  }

  #sources(e: Entry): Pick<NodeImage, 'bytes_from_peers' | 'bytes_from_registry' | 'bytes_from_webseed'> {
    const total = e.torrent?.downloaded ?? 0;
    return {
      bytes_from_peers: e.peerBytes,
      bytes_from_registry: e.registryBytes,
      bytes_from_webseed: Math.max(0, total - e.peerBytes - e.registryBytes) + e.httpBytes,
    };
  }

  #start(entry: Entry): void {
    const { target } = entry;
    const path = join(this.#o.dir, target.sha256);
    entry.attempts++;
    entry.state = 'fetching';
    entry.badPieces = 0;
    if (!target.magnet) {
      void this.#overHttp(entry, path);
      return;
    }
    mkdirSync(path, { recursive: true });
    const torrent = this.#client.add(target.magnet, { path });
    this.#notToSelf(torrent);
    entry.torrent = torrent;
    // Progress is piece data from any wire (torrent.received counts every byte off a connection:
    // the seeder's refusals, asked anew every second, kept a fetch that got no data from giving
    // up). Count what peers send, the registry's seeder apart (its peer id says so); the web seed
    // is a wire too, of type webSeed, and counted as the rest.
    let pieceBytes = 0;
    torrent.on('wire', (wire: Wire) => {
      wire.on('download', (n: number) => void (pieceBytes += n));
      if (wire.type === 'webSeed') return;
      if (wire.peerId === this.#client.peerId) return void wire.destroy(); // see #notToSelf
      const registry = isRegistryPeer(wire.peerId);
      this.#o.log.debug({ image: target.name, peer: wire.remoteAddress, registry }, 'bittorrent peer connected');
      wire.on('download', (n: number) => (registry ? (entry.registryBytes += n) : (entry.peerBytes += n)));
    });
    // webtorrent drops a piece that fails its hash and asks again: a source that keeps sending
    // other bytes than the published ones would hold the fetch forever.
    torrent.on('warning', (err: Error) => {
      if (!/failed verification/.test(err.message) || entry.torrent !== torrent) return;
      entry.badPieces++;
      if (entry.badPieces < (this.#o.maxBadPieces ?? 4)) return;
      torrent.destroy({ destroyStore: true });
      entry.torrent = null;
      rmSync(path, { recursive: true, force: true });
      this.#fail(entry, `${entry.badPieces} pieces of ${target.name} failed their hash check: its peers or web seed send other bytes than the published image; refused`);
    });
    torrent.on('error', (err: Error) => this.#fail(entry, `bittorrent: ${err.message}`));
    const noMetadata = setTimeout(() => {
      if (torrent.ready || entry.torrent !== torrent) return;
      this.#o.log.info({ image: target.name }, 'no torrent metadata yet; fetching the archive from the web seed');
      entry.torrent = null;
      torrent.destroy({ destroyStore: true });
      void this.#overHttp(entry, path);
    }, this.#o.metadataTimeoutMs ?? 20_000);
    torrent.on('ready', () => {
      clearTimeout(noMetadata);
      movedAt = Date.now();
      startAtRandomPiece(torrent);
      batchUpdates(torrent);
      preferPeers(torrent, (w) => isRegistryPeer(w.peerId), () => stalled);
    });
    // Every second while fetching: nodes that start together announce before they know of each
    // other, and the tracker's interval is minutes, so ask it again every few seconds, so they
    // meet; and when nothing came from any peer or the seeder for stallMs (peers gone, the
    // seeder unreachable, choking this node or refusing what it asks), add the registry's web
    // seed; and when nothing came from any source for giveUpMs, fail: the retry starts anew.
    let ticks = 0;
    let received = 0;
    let movedAt = Date.now();
    let stalled = false;
    const tick = setInterval(() => {
      if (entry.torrent !== torrent || torrent.done || torrent.destroyed) return void clearInterval(tick);
      if (++ticks % REANNOUNCE_TICKS === 0) reannounce(torrent);
      if (!torrent.ready) return;
      // webtorrent asks for pieces only on a wire's events (a block, a have, an unchoke): after
      // the seeder refused every piece a wire asked for, no event came and nothing was asked of
      // any source again, for good (at ≈ 75 %, issue 18). Asked anew every tick.
      askAgain(torrent);
      if (pieceBytes > received) {
        received = pieceBytes;
        movedAt = Date.now();
        return;
      }
      const idle = Date.now() - movedAt;
      if (!stalled && idle >= (this.#o.stallMs ?? 5000)) {
        stalled = true;
        this.#o.log.info({ image: target.name, seconds: idle / 1000, web_seed: Boolean(target.webSeed) }, 'no pieces from peers or the seeder lately; asking the registry for any piece, and its web seed');
        if (target.webSeed) torrent.addWebSeed(target.webSeed);
        movedAt = Date.now();
      } else if (idle >= (this.#o.giveUpMs ?? 20_000)) {
        const sources = target.webSeed ? "peers, the registry's seeder or its web seed" : "peers or the registry's seeder (no web seed)";
        this.#fail(entry, `no data for image ${target.name} from ${sources} in ${Math.round(idle / 1000)} s, at ${Math.round(torrent.progress * 100)} %`);
      }
    }, TICK_MS);
    tick.unref();
    torrent.on('done', () => {
      if (entry.state !== 'fetching') return;
      const file = torrent.files[0];
      if (!file || torrent.files.length !== 1) return void this.#fail(entry, `the torrent of ${target.name} must hold exactly one file`);
      void this.#verify(entry, join(path, file.path));
    });
  }

  /**
   * The tracker lists a node among its own peers (bittorrent-tracker leaves the asker out only
   * for WebRTC peers), and webtorrent skips only 127.0.0.1 at its own port: every announce made
   * the node connect to itself, and each such connection cost two 768-bit Diffie-Hellman keys
   * (protocol encryption), a third of a node's CPU time for a 64 MiB fetch (docs/benchmarks.md).
   * An address of this machine at this client's port is skipped too.
   */
  #notToSelf(torrent: Torrent): void {
    skipAddresses(torrent, (host, port) => port === this.#client.torrentPort && ownAddresses().has(host));
  }

  /** Plain HTTP from the web seed: when there is no magnet, or no peer answered with metadata. */
  async #overHttp(entry: Entry, path: string): Promise<void> {
    const url = entry.target.webSeed;
    if (!url) return this.#fail(entry, `image ${entry.target.name} has neither a magnet link with peers nor a web seed`);
    mkdirSync(path, { recursive: true });
    const file = join(path, HTTP_FILE);
    // A web seed that stops sending (or never answers) fails the attempt after giveUpMs.
    const giveUpMs = this.#o.giveUpMs ?? 20_000;
    const abort = new AbortController();
    const idle = setTimeout(() => abort.abort(), giveUpMs);
    try {
      const res = await fetch(url, { signal: abort.signal });
      if (!res.ok || !res.body) throw new Error(`GET ${url} answered ${res.status}`);
      const counted = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
      counted.on('data', (c: Buffer) => {
        entry.httpBytes += c.length;
        idle.refresh();
      });
      await pipeline(counted, createWriteStream(file));
    } catch (err) {
      const why = abort.signal.aborted ? `no data from ${url} in ${Math.round(giveUpMs / 1000)} s` : err instanceof Error ? err.message : String(err);
      return this.#fail(entry, `web seed: ${why}`);
    } finally {
      clearTimeout(idle);
    }
    await this.#verify(entry, file);
  }

  /** Never imports an archive whose sha256 is not the one the registry published. */
  async #verify(entry: Entry, file: string): Promise<void> {
    const { target } = entry;
    entry.state = 'verifying';
    const { sha256 } = await sha256File(file);
    if (sha256 !== target.sha256) {
      entry.torrent?.destroy({ destroyStore: true });
      entry.torrent = null;
      rmSync(join(this.#o.dir, target.sha256), { recursive: true, force: true });
      return this.#fail(entry, `the archive of ${target.name} has sha256 ${sha256}, not the published ${target.sha256}; refused`);
    }
    entry.state = 'importing';
    this.#o.log.debug({ image: target.name, sha256: target.sha256 }, 'importing a fetched image');
    try {
      await this.#o.onReady(target, file);
    } catch (err) {
      // A full pool says so with its code (pool_full); the retry imports again.
      return this.#fail(entry, `import: ${isStorageError(err) ? `${err.code}: ` : ''}${err instanceof Error ? err.message : String(err)}`);
    }
    entry.state = 'ready';
    entry.error = null;
    const sources = this.#sources(entry);
    this.#o.log.info({ image: target.name, ...sources }, 'image fetched');
    this.#o.onChange(target.name, 'ready', { image: target.name, sha256: target.sha256, ...sources, seconds: (Date.now() - entry.startedAt) / 1000 });
  }

  #fail(entry: Entry, error: string): void {
    if (this.#closed) return;
    // A retry adds the torrent anew: the client refuses a duplicate.
    entry.torrent?.destroy();
    entry.torrent = null;
    entry.state = 'failed';
    entry.error = error;
    this.#o.log.warn({ image: entry.target.name, err: error, attempt: entry.attempts }, 'image fetch failed; retrying later');
    this.#o.onChange(entry.target.name, 'failed', { image: entry.target.name, error, attempt: entry.attempts });
    const delay = Math.min(300_000, (this.#o.retryMs ?? 30_000) * 2 ** (entry.attempts - 1));
    entry.retry = setTimeout(() => {
      entry.retry = null;
      if (this.#entries.get(entry.target.name) === entry && !this.#closed) this.#start(entry);
    }, delay);
    entry.retry.unref();
  }

  #drop(entry: Entry): void {
    if (entry.retry) clearTimeout(entry.retry);
    entry.torrent?.destroy({ destroyStore: true });
    this.#entries.delete(entry.target.name);
  }

  /** Whether an archive for this sha256 is kept here (for seeding). */
  has(sha256: string): boolean {
    return existsSync(join(this.#o.dir, sha256));
  }
}
