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
import { createLogger } from '@planetlite/core';
import { ImageFetcher, type FetchTarget } from '../src/fetch.js';

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
  seeder = new WebTorrent({ dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false });
  seeded = await new Promise<Torrent>((resolve) => seeder.seed(archive, { announce: [announce], private: true }, resolve));
});

afterAll(async () => {
  await new Promise<void>((resolve) => seeder?.destroy(() => resolve()));
  await new Promise<void>((resolve) => (tracker ? tracker.close(() => resolve()) : resolve()));
  await new Promise<void>((resolve) => (web ? web.close(() => resolve()) : resolve()));
  rmSync(dir, { recursive: true, force: true });
});

function fetcher(opts: { metadataTimeoutMs?: number } = {}) {
  const ready: Array<{ target: FetchTarget; file: string; sha: string }> = [];
  const changes: Array<{ image: string; state: string; detail: Record<string, unknown> }> = [];
  const f = new ImageFetcher({
    dir: mkdtempSync(join(dir, 'node-')),
    log,
    uploadKbps: null,
    metadataTimeoutMs: opts.metadataTimeoutMs ?? 20_000,
    retryMs: 60_000,
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
  it('fetches from the swarm, verifies the sha256 and hands the archive over; peers count as peers', async () => {
    const { f, ready, changes } = fetcher();
    try {
      f.want({ name: 'tiny', sha256, magnet: seeded.magnetURI, webSeed });
      expect(await settle(f, 'tiny')).toBe('ready');
      expect(ready).toHaveLength(1);
      expect(ready[0]!.sha).toBe(sha256);
      expect(statSync(ready[0]!.file).size).toBe(SIZE);
      const [img] = f.report();
      expect(img).toMatchObject({ image: 'tiny', state: 'ready', progress: 1 });
      expect(img!.bytes_from_peers + img!.bytes_from_webseed).toBeGreaterThanOrEqual(SIZE);
      expect(img!.bytes_from_peers).toBeGreaterThan(0);
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
      expect(f.report()[0]).toMatchObject({ bytes_from_peers: 0, bytes_from_webseed: SIZE });
    } finally {
      await f.close();
    }
    expect(existsSync(archive)).toBe(true);
  });
});
