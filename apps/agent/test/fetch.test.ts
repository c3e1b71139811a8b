// The image fetcher against a real swarm on loopback: a webtorrent seeder announcing to a private
// bittorrent-tracker, and an HTTP web seed with Range support, as the registry provides them.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebTorrent, { type Torrent } from 'webtorrent';
// @ts-expect-error bittorrent-tracker ships no types; the test only starts its server.
import { Server as Tracker } from 'bittorrent-tracker';
import { registryPeerId } from '@planetlite/torrent';
import { createLogger } from '@planetlite/core';
import { ImageFetcher, type FetchTarget } from '../src/images/fetch.js';

const log = createLogger({ name: 'fetch-test', level: 'silent' });
const SIZE = 3 * 1024 * 1024 + 12345;
let dir: string;
let archive: string;
let sha256: string;
let tracker: { listen(port: number, host: string, cb: () => void): void; close(cb?: () => void): void; http: Server };
let announce: string;
let web: Server;
let webSeed: string;
let seeder: WebTorrent;
let seeded: Torrent;
let webHits = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pl-fetch-'));
  archive = join(dir, 'tiny.tar');
  const data = randomBytes(SIZE);
  writeFileSync(archive, data);
  sha256 = createHash('sha256').update(data).digest('hex');
  tracker = new Tracker({ udp: false, ws: false, http: true, stats: false });
  await new Promise<void>((resolve) => tracker.listen(0, '127.0.0.1', resolve));
  announce = `http://127.0.0.1:${(tracker.http.address() as AddressInfo).port}/announce`;
  // The web seed: the archive, whole or by Range, as GET /v1/images/{name}/archive serves it.
  web = createServer((req, res) => {
    webHits++;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const end = m?.[2] ? Number(m[2]) : SIZE - 1;
    const start = m ? Number(m[1]) : 0;
    res.writeHead(m ? 206 : 200, { 'content-length': end - start + 1, 'accept-ranges': 'bytes', ...(m ? { 'content-range': `bytes ${start}-${end}/${SIZE}` } : {}) });
    createReadStream(archive, { start, end }).pipe(res);
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
  webSeed = `http://127.0.0.1:${(web.address() as AddressInfo).port}/v1/images/tiny/archive`;
  // The registry's seeder, with its peer id, as apps/registry makes it.
  const peerId = registryPeerId();
  seeder = new WebTorrent({ dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false, peerId });
  seeded = await new Promise<Torrent>((resolve) => seeder.seed(archive, { announce: [announce], private: true }, resolve));
});

afterAll(async () => {
  await new Promise<void>((resolve) => seeder?.destroy(() => resolve()));
  await new Promise<void>((resolve) => (tracker ? tracker.close(() => resolve()) : resolve()));
  await new Promise<void>((resolve) => (web ? web.close(() => resolve()) : resolve()));
  rmSync(dir, { recursive: true, force: true });
});

function fetcher(opts: { metadataTimeoutMs?: number; maxBadPieces?: number } = {}) {
  const ready: Array<{ target: FetchTarget; file: string; sha: string }> = [];
  const changes: Array<{ image: string; state: string; detail: Record<string, unknown> }> = [];
  const f = new ImageFetcher({
    dir: mkdtempSync(join(dir, 'node-')),
    log,
    uploadKbps: null,
    metadataTimeoutMs: opts.metadataTimeoutMs ?? 20_000,
    retryMs: 60_000,
    ...(opts.maxBadPieces ? { maxBadPieces: opts.maxBadPieces } : {}),
    onReady: async (target, file) => {
      ready.push({ target, file, sha: createHash('sha256').update(readFileSync(file)).digest('hex') });
    },
    onChange: (image, state, detail) => changes.push({ image, state, detail }),
  });
  return { f, ready, changes };
}

async function settle(f: ImageFetcher, name: string, ms = 30_000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const s = f.state(name)?.state;
    if (s === 'ready' || s === 'failed') return s;
    if (Date.now() > end) throw new Error(`image ${name} still ${s} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('image fetcher', () => {
  it('fetches from the swarm, verifies the sha256 and hands the archive over; the registry counts apart', async () => {
    const { f, ready, changes } = fetcher();
    try {
      f.want({ name: 'tiny', sha256, magnet: seeded.magnetURI, webSeed });
      expect(await settle(f, 'tiny')).toBe('ready');
      expect(ready).toHaveLength(1);
      expect(ready[0]!.sha).toBe(sha256);
      expect(statSync(ready[0]!.file).size).toBe(SIZE);
      const [img] = f.report();
      expect(img).toMatchObject({ image: 'tiny', state: 'ready', progress: 1 });
      expect(img!.bytes_from_peers + img!.bytes_from_registry! + img!.bytes_from_webseed).toBeGreaterThanOrEqual(SIZE);
      // Only the registry's seeder and the web seed were there: no byte came from another node.
      expect(img!.bytes_from_peers).toBe(0);
      expect(img!.bytes_from_registry).toBeGreaterThan(0);
      expect(changes.at(-1)).toMatchObject({ image: 'tiny', state: 'ready', detail: { sha256 } });
    } finally {
      await f.close();
    }
  });

  it('refuses an archive whose sha256 is not the published one, and keeps nothing of it', async () => {
    const { f, ready, changes } = fetcher();
    const wrong = 'f'.repeat(64);
    try {
      f.want({ name: 'tampered', sha256: wrong, magnet: seeded.magnetURI, webSeed });
      expect(await settle(f, 'tampered')).toBe('failed');
      expect(ready).toEqual([]);
      expect(f.state('tampered')?.error).toMatch(/refused/);
      expect(changes.at(-1)).toMatchObject({ image: 'tampered', state: 'failed' });
      expect(f.has(wrong)).toBe(false);
    } finally {
      await f.close();
    }
  });

  it('falls back to the web seed when no peer has the torrent', async () => {
    const { f, ready } = fetcher({ metadataTimeoutMs: 1500 });
    // A magnet no one seeds (another infohash), announced to the same tracker.
    const orphan = `magnet:?xt=urn:btih:${'ab'.repeat(20)}&tr=${encodeURIComponent(announce)}`;
    const hits = webHits;
    try {
      f.want({ name: 'lonely', sha256, magnet: orphan, webSeed });
      expect(await settle(f, 'lonely')).toBe('ready');
      expect(ready[0]?.sha).toBe(sha256);
      expect(webHits).toBeGreaterThan(hits);
      expect(f.report()[0]).toMatchObject({ bytes_from_peers: 0, bytes_from_registry: 0, bytes_from_webseed: SIZE });
    } finally {
      await f.close();
    }
    expect(existsSync(archive)).toBe(true);
  });

  it('gives up on a source whose pieces fail their hash check, and imports nothing', async () => {
    // A seeder that announced an archive and then serves other bytes for it: the file changed
    // on disk under it (a tampered or rotten copy).
    const file = join(dir, 'rotten.tar');
    const good = randomBytes(2 * 1024 * 1024);
    writeFileSync(file, good);
    const rotten = await new Promise<Torrent>((resolve) => seeder.seed(file, { announce: [announce], private: true }, resolve));
    writeFileSync(file, randomBytes(good.length));
    const { f, ready, changes } = fetcher({ maxBadPieces: 3 });
    const goodSha = createHash('sha256').update(good).digest('hex');
    try {
      f.want({ name: 'rotten', sha256: goodSha, magnet: rotten.magnetURI, webSeed: null });
      expect(await settle(f, 'rotten')).toBe('failed');
      expect(f.state('rotten')?.error).toMatch(/3 pieces of rotten failed their hash check.*refused/);
      expect(ready).toEqual([]);
      expect(changes.at(-1)).toMatchObject({ image: 'rotten', state: 'failed' });
      expect(f.has(goodSha)).toBe(false);
    } finally {
      await f.close();
      await seeder.remove(rotten);
    }
  });

  it('fetches from another node when the registry is gone, keeps seeding, and forgets on request', async () => {
    const a = fetcher();
    const b = fetcher();
    try {
      a.f.want({ name: 'tiny', sha256, magnet: seeded.magnetURI, webSeed: null });
      expect(await settle(a.f, 'tiny')).toBe('ready');
      // The registry stops seeding; node a is the only source left (no web seed either).
      await seeder.remove(seeded);
      b.f.want({ name: 'tiny', sha256, magnet: seeded.magnetURI, webSeed: null });
      expect(await settle(b.f, 'tiny')).toBe('ready');
      expect(b.ready[0]?.sha).toBe(sha256);
      expect(b.f.report()[0]).toMatchObject({ bytes_from_registry: 0, bytes_from_webseed: 0 });
      expect(b.f.report()[0]!.bytes_from_peers).toBeGreaterThanOrEqual(SIZE);
      expect(a.f.archives()).toEqual([sha256]);
      a.f.forget('tiny', sha256);
      expect(a.f.archives()).toEqual([]);
      expect(a.f.state('tiny')).toBeUndefined();
    } finally {
      await a.f.close();
      await b.f.close();
      seeded = await new Promise<Torrent>((resolve) => seeder.seed(archive, { announce: [announce], private: true }, resolve));
    }
  });

  it('seeds an archive it kept from an earlier run without importing it again', async () => {
    const a = fetcher();
    const c = fetcher();
    try {
      // A fetched it in an earlier life (its dir holds the archive); a new fetcher on the same dir seeds it.
      a.f.want({ name: 'tiny', sha256, magnet: seeded.magnetURI, webSeed: null });
      expect(await settle(a.f, 'tiny')).toBe('ready');
      const kept = a.f.archives();
      expect(kept).toEqual([sha256]);
      await a.f.close();
      const restarted = new ImageFetcher({ dir: (a.ready[0]!.file.split(`/${sha256}/`)[0])!, log, uploadKbps: null, onReady: async () => { throw new Error('imported again'); }, onChange: () => undefined });
      try {
        restarted.seed({ name: 'tiny', sha256, magnet: seeded.magnetURI, webSeed: null });
        expect(restarted.state('tiny')?.state).toBe('ready');
        // Let it check its pieces (metadata from the registry), then take the registry away.
        await new Promise((r) => setTimeout(r, 1500));
        await seeder.remove(seeded);
        c.f.want({ name: 'tiny', sha256, magnet: seeded.magnetURI, webSeed: null });
        expect(await settle(c.f, 'tiny')).toBe('ready');
        expect(c.f.report()[0]!.bytes_from_peers).toBeGreaterThanOrEqual(SIZE);
      } finally {
        await restarted.close();
      }
    } finally {
      await c.f.close();
    }
  });
});
