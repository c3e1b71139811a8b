// Image archives: received from uploads into the images directory, described by a private
// torrent, announced through the registry's own tracker and seeded by one webtorrent client.
//
// Several replicas: an archive lives on the replica that received it. Run them on a shared
// images directory (NFS or the like) so each can serve and seed every image; nothing here
// copies archives between replicas.
import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Server as Tracker } from 'bittorrent-tracker';
import WebTorrent, { type ChunkStore } from 'webtorrent';
import { pinnedDispatcher } from '@planetlite/api';
import { AppError } from '@planetlite/core';
import type { Logger } from '@planetlite/core';
import type { Database } from '@planetlite/db';
import type { RegistryConfig } from '../config.js';
import { allInfohashes, infohashKnown, seedableImages, webSeedOf, type SeedableImage } from '../repositories/images.js';
import { ArchiveHasher, metainfo, pieceLengthFor, registryPeerId, superSeed, torrentInfo } from '@planetlite/torrent';

/** An upload that has been written to a temporary file and hashed, not yet kept. */
export interface ReceivedArchive {
  tmp: string;
  sha256: string;
  size: number;
  /** Name of the one file in the torrent: the image name plus the archive's suffix. */
  torrentName: string;
  /** Bencoded info dictionary; infohash is its sha1. */
  info: Buffer;
  infohash: string;
}

export type { SeedableImage } from '../repositories/images.js';

/** What the image service uses; config is read when used (the public URL is known only once the registry listens). */
export interface ImageDeps {
  db: Database;
  log: Logger;
  config: Pick<RegistryConfig, 'imagesDir' | 'dataDir' | 'publicUrl' | 'torrentPort' | 'seedUploadKbps' | 'superSeedMs'>;
  /** The registry's own CA, when it has one: the seeder announces to its own tracker over HTTPS. */
  trust: { ca: string | null };
}

export const UPLOAD_PREFIX = '.upload-';

export class ImageService {
  readonly dir: string;
  readonly #ctx: ImageDeps;
  readonly #ownsDir: boolean;
  readonly #tracker: Tracker;
  /** Infohashes the tracker admits; misses are looked up, so another replica's uploads count too. */
  readonly #known = new Set<string>();
  #client: WebTorrent | null = null;
  #closed = false;

  private constructor(ctx: ImageDeps, dir: string, ownsDir: boolean) {
    this.#ctx = ctx;
    this.dir = dir;
    this.#ownsDir = ownsDir;
    // Only the request handler: fastify serves /announce and /scrape, so no servers of its own.
    // No trustProxy: a peer is the address its announce came from.
    this.#tracker = new Tracker({
      http: false,
      udp: false,
      ws: false,
      stats: false,
      filter: (infoHash, _params, cb) => {
        this.#admits(infoHash).then(
          (ok) => cb(ok ? null : new Error('unknown infohash: this tracker only serves PlanetLite images')),
          (err: unknown) => cb(err instanceof Error ? err : new Error(String(err))),
        );
      },
    });
    this.#tracker.on('warning', (err: Error) => ctx.log.debug({ err: err.message }, 'tracker refused a request'));
    this.#tracker.on('error', (err: Error) => ctx.log.warn({ err: err.message }, 'tracker error'));
  }

  static async open(ctx: ImageDeps): Promise<ImageService> {
    const { imagesDir, dataDir } = ctx.config;
    let dir = imagesDir ?? (dataDir ? join(dataDir, 'images') : undefined);
    const owns = dir === undefined;
    dir ??= await mkdtemp(join(tmpdir(), 'planetlite-images-'));
    await mkdir(dir, { recursive: true });
    // Uploads cut short by a crash leave their temporary files behind.
    for (const f of await readdir(dir)) if (f.startsWith(UPLOAD_PREFIX)) await rm(join(dir, f), { force: true });
    const svc = new ImageService(ctx, dir, owns);
    await svc.refreshKnown();
    return svc;
  }

  get announceUrl(): string {
    return `${this.#ctx.config.publicUrl}/announce`;
  }

  webSeedUrl(name: string): string {
    return webSeedOf(this.#ctx.config.publicUrl, name);
  }

  /** The archive's path, or null when this replica does not hold it. */
  async archivePath(file: string | null): Promise<{ path: string; size: number } | null> {
    if (!file) return null;
    const path = join(this.dir, file);
    try {
      const st = await stat(path);
      return st.isFile() ? { path, size: st.size } : null;
    } catch {
      return null;
    }
  }

  magnetOf(a: { infohash: string; torrentName: string; size: number; name: string }): string {
    const q = [
      `xt=urn:btih:${a.infohash}`,
      `dn=${encodeURIComponent(a.torrentName)}`,
      `xl=${a.size}`,
      `tr=${encodeURIComponent(this.announceUrl)}`,
      `ws=${encodeURIComponent(this.webSeedUrl(a.name))}`,
    ];
    return `magnet:?${q.join('&')}`;
  }

  async refreshKnown(): Promise<void> {
    for (const infohash of await allInfohashes(this.#ctx.db)) this.#known.add(infohash);
  }

  async #admits(infoHash: string): Promise<boolean> {
    if (this.#known.has(infoHash)) return true;
    const known = await infohashKnown(this.#ctx.db, infoHash);
    if (known) this.#known.add(infoHash);
    return known;
  }

  /** Hands a GET /announce or /scrape to the tracker, which answers on res itself. */
  tracker(action: 'announce' | 'scrape', req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('content-type', 'text/plain; charset=binary');
    this.#tracker.onHttpRequest(req, res, { action });
  }

  /**
   * Streams an upload into a temporary file, hashing it (sha256 and the torrent's pieces) on the
   * way; refuses more than limit bytes. The temporary file is gone again if this throws.
   */
  async receive(body: Readable, name: string, opts: { limit: number; contentLength?: number | undefined }): Promise<ReceivedArchive> {
    const tmp = join(this.dir, `${UPLOAD_PREFIX}${randomUUID()}`);
    const hasher = new ArchiveHasher(pieceLengthFor(opts.contentLength), opts.limit, () => new AppError('payload_too_large', `the image archive is larger than ${opts.limit} bytes`));
    try {
      await pipeline(body, hasher, createWriteStream(tmp, { flags: 'wx' }));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    const torrentName = `${name}${hasher.suffix()}`;
    const { info, infohash } = torrentInfo({ name: torrentName, length: hasher.size, pieceLength: hasher.pieceLength, pieces: hasher.pieces() });
    return { tmp, sha256: hasher.sha256(), size: hasher.size, torrentName, info, infohash };
  }

  async discard(a: ReceivedArchive): Promise<void> {
    await rm(a.tmp, { force: true });
  }

  /** Moves an upload to its final name, the sha256: the same archive under two names is one file. */
  async keep(a: ReceivedArchive): Promise<string> {
    await rename(a.tmp, join(this.dir, a.sha256));
    return a.sha256;
  }

  /** A new image: the tracker admits it and, once the registry listens, the seeder serves it. */
  published(img: SeedableImage & { infohash: string }): void {
    this.#known.add(img.infohash);
    if (this.#client) void this.#seed(img);
  }

  /**
   * Starts the seeder: called once the registry listens, since the seeder announces to the
   * registry's own tracker at its public URL. Seeds every image whose archive is here.
   */
  async startSeeding(): Promise<void> {
    if (this.#client || this.#closed) return;
    const { config, log } = this.#ctx;
    const client = new WebTorrent({
      dht: false,
      lsd: false,
      natUpnp: false,
      natPmp: false,
      utp: false,
      utPex: false,
      // The registry holds every piece; it never fetches from its own web seed.
      webSeeds: false,
      torrentPort: config.torrentPort,
      // Nodes count what the registry sends apart from what other nodes send (20 bytes in all).
      peerId: registryPeerId(),
      ...(config.seedUploadKbps ? { uploadLimit: Math.round((config.seedUploadKbps * 1000) / 8) } : {}),
      // It announces to this registry's own tracker over HTTPS: with our CA, not the process's trust.
      ...(this.#ctx.trust.ca ? { tracker: { proxyOpts: { httpsAgent: pinnedDispatcher(this.#ctx.trust.ca) } } } : {}),
    });
    // webtorrent emits 'error' for its own failures (a taken port, say): logged, never thrown.
    client.on('error', (err: Error) => log.error({ err: err.message }, 'image seeder error'));
    client.once('listening', () => log.info({ port: client.address()?.port, announce: this.announceUrl }, 'image seeder listening'));
    this.#client = client;
    for (const r of await seedableImages(this.#ctx.db)) await this.#seed(r);
  }

  /**
   * The archive's bytes from start to end for the web seed route: through the seeder's upload
   * cap when PLANETLITE_SEED_UPLOAD_KBPS sets one (webtorrent's own throttle group), so the cap
   * bounds everything this registry sends of images, over BitTorrent and over HTTP together.
   */
  archiveStream(path: string, start: number, end: number): Readable {
    const file = createReadStream(path, { start, end });
    const group = (this.#client as unknown as { throttleGroups?: { up?: { throttle(): Readable } } } | null)?.throttleGroups?.up;
    if (!this.#ctx.config.seedUploadKbps || !group) return file;
    const capped = group.throttle();
    file.on('error', (err) => capped.destroy(err));
    // The throttle leaves its group only when destroyed: also after a normal end.
    capped.on('close', () => file.destroy());
    capped.on('end', () => setImmediate(() => capped.destroy()));
    return file.pipe(capped as unknown as NodeJS.WritableStream) as unknown as Readable;
  }

  get seeder(): { port: number | null; torrents: number } {
    return { port: this.#client?.address()?.port ?? null, torrents: this.#client?.torrents.length ?? 0 };
  }

  async #seed(img: SeedableImage): Promise<void> {
    const client = this.#client;
    if (!client || client.destroyed) return;
    const { log } = this.#ctx;
    const here = await this.archivePath(img.file);
    if (!here || here.size !== Number(img.size)) {
      log.warn({ image: img.name, dir: this.dir }, 'image archive is missing or truncated here; not seeding it (uploaded to another replica?)');
      return;
    }
    const info = Buffer.from(img.torrent_info);
    // The metainfo names the tracker as it is reachable now, whatever it was at upload.
    const torrentFile = metainfo(this.announceUrl, info);
    try {
      const torrent = client.add(torrentFile, {
        path: this.dir,
        // The archive is read where it lies (named by its sha256) and never written.
        store: ArchiveStore,
        storeOpts: { file: here.path },
        // Archives are content-addressed and written once by this registry: no rehash at start.
        skipVerify: true,
      });
      superSeed(torrent, this.#ctx.config.superSeedMs);
      torrent.on('error', (err: Error) => log.warn({ image: img.name, err: err.message }, 'seeding failed'));
      torrent.on('warning', (err: Error) => log.debug({ image: img.name, err: err.message }, 'seeder warning'));
    } catch (err) {
      log.warn({ image: img.name, err: err instanceof Error ? err.message : String(err) }, 'seeding failed');
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const client = this.#client;
    this.#client = null;
    if (client && !client.destroyed) await new Promise<void>((resolve) => client.destroy(() => resolve()));
    await new Promise<void>((resolve) => this.#tracker.close(() => resolve()));
    if (this.#ownsDir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** A read-only abstract-chunk-store over one archive file (the seeder never writes). */
class ArchiveStore implements ChunkStore {
  readonly chunkLength: number;
  readonly #file: string;
  readonly #length: number;
  #fd: Promise<FileHandle> | null = null;
  #closed = false;

  constructor(chunkLength: number, opts: Record<string, unknown>) {
    this.chunkLength = chunkLength;
    this.#file = opts.file as string;
    this.#length = Number(opts.length);
  }

  get(index: number, opts: { offset?: number; length?: number } | null | undefined, cb: (err: Error | null, buf?: Uint8Array) => void): void {
    // Callers may leave opts out: get(index, cb).
    if (typeof (opts as unknown) === 'function') [opts, cb] = [null, opts as unknown as typeof cb];
    if (this.#closed) return void queueMicrotask(() => cb(new Error('store is closed')));
    const start = index * this.chunkLength;
    const chunk = Math.min(this.chunkLength, this.#length - start);
    const offset = opts?.offset ?? 0;
    const length = opts?.length ?? chunk - offset;
    if (start < 0 || chunk <= 0 || offset < 0 || length < 0 || offset + length > chunk) {
      return void queueMicrotask(() => cb(new Error(`chunk ${index} (${offset}+${length}) is out of range`)));
    }
    this.#fd ??= open(this.#file, 'r');
    this.#fd
      .then(async (fd) => {
        const buf = Buffer.alloc(length);
        const { bytesRead } = await fd.read(buf, 0, length, start + offset);
        if (bytesRead !== length) throw new Error(`short read of ${this.#file}`);
        cb(null, buf);
      })
      .catch((err: unknown) => cb(err instanceof Error ? err : new Error(String(err))));
  }

  put(_index: number, _buf: Uint8Array, cb?: (err: Error | null) => void): void {
    queueMicrotask(() => cb?.(new Error('image archives are read-only')));
  }

  close(cb?: (err: Error | null) => void): void {
    this.#closed = true;
    const fd = this.#fd;
    this.#fd = null;
    if (!fd) return void queueMicrotask(() => cb?.(null));
    fd.then((h) => h.close()).then(
      () => cb?.(null),
      () => cb?.(null),
    );
  }

  /** Destroying a torrent's store must never delete the archive: only close it. */
  destroy(cb?: (err: Error | null) => void): void {
    this.close(cb);
  }
}
