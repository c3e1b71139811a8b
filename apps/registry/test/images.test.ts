// Images (issue 4): upload as admin into the images directory, the private torrent and magnet, the
// archive over HTTP with ranges, the tracker that admits only known infohashes, and a real
// webtorrent download from the registry's seeder through its tracker.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import bencode from 'bencode';
import WebTorrent from 'webtorrent';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';
import { parseRange } from '../src/routes/images.js';

const MAX = 4 * 1024 * 1024;
let t: TestApp;
let w: World;
let url: string;
let imagesDir: string;
let downloads: string;
const clients: WebTorrent[] = [];
// gzip's magic first, so the torrent's file is named .tar.gz; odd size so the last piece is short.
const archive = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(1536 * 1024 + 777)]);
const sha256 = createHash('sha256').update(archive).digest('hex');
let image: any;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

function upload(query: string, body: Buffer, token: string | null, headers: Record<string, string> = {}) {
  return t.app.inject({
    method: 'POST',
    url: `/v1/images?${query}`,
    headers: { 'content-type': 'application/octet-stream', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    payload: body,
  });
}

/** What the images directory holds besides the archives already published. */
const files = () => readdirSync(imagesDir).sort();
const rowCount = async (name: string) => (await t.db.query('SELECT 1 FROM images WHERE name = $1', [name])).rows.length;

/** Percent-encodes every byte, as BitTorrent clients send info_hash and peer_id. */
const binaryParam = (hex: string) => hex.replace(/../g, '%$&');

function announce(infohashHex: string) {
  const peerId = Buffer.from('-PL0001-abcdefghijkl').toString('hex');
  return t.app.inject({
    method: 'GET',
    url: `/announce?info_hash=${binaryParam(infohashHex)}&peer_id=${binaryParam(peerId)}&port=6881&uploaded=0&downloaded=0&left=100&compact=1&event=started`,
  });
}

beforeAll(async () => {
  imagesDir = mkdtempSync(join(tmpdir(), 'pl-images-test-'));
  downloads = mkdtempSync(join(tmpdir(), 'pl-images-dl-'));
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  t = await testApp({ config: { port, publicUrl: url, imagesDir, maxImageBytes: MAX } });
  await t.app.listen({ host: '127.0.0.1', port });
  w = await makeWorld(t.app);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => new Promise<void>((resolve) => c.destroy(() => resolve()))));
  await t?.close();
  rmSync(imagesDir, { recursive: true, force: true });
  rmSync(downloads, { recursive: true, force: true });
});

describe('POST /v1/images', () => {
  it('takes an archive from an admin: 201 with sha256, size, infohash, magnet and web seed; the file is kept under its sha256', async () => {
    const res = await upload('name=tiny-2026.11&kinds=lxc,kvm&version=2026.11', archive, w.admin, { 'x-content-sha256': sha256 });
    expect(res.statusCode, res.body).toBe(201);
    image = res.json();
    expect(image).toMatchObject({ name: 'tiny-2026.11', version: '2026.11', arch: 'x86_64', sha256, size: archive.length, kinds: ['lxc', 'kvm'] });
    expect(image.infohash).toMatch(/^[0-9a-f]{40}$/);
    expect(image.web_seed).toBe(`${url}/v1/images/tiny-2026.11/archive`);
    const magnet = new URLSearchParams(image.magnet.slice('magnet:?'.length));
    expect(magnet.get('xt')).toBe(`urn:btih:${image.infohash}`);
    expect(magnet.get('tr')).toBe(`${url}/announce`);
    expect(magnet.get('ws')).toBe(image.web_seed);
    expect(magnet.get('dn')).toBe('tiny-2026.11.tar.gz');
    expect(files()).toEqual([sha256]);
    expect(readFileSync(join(imagesDir, sha256)).equals(archive)).toBe(true);

    // The stored info dictionary is a private torrent whose pieces really are the archive's.
    const { rows } = await t.db.query<{ torrent_info: Uint8Array; created_by: string }>('SELECT torrent_info, created_by FROM images WHERE name = $1', ['tiny-2026.11']);
    const raw = Buffer.from(rows[0]!.torrent_info);
    expect(createHash('sha1').update(raw).digest('hex')).toBe(image.infohash);
    const info = bencode.decode(raw) as { length: number; name: Uint8Array; 'piece length': number; pieces: Uint8Array; private: number };
    expect(info.length).toBe(archive.length);
    expect(info.private).toBe(1);
    expect(Buffer.from(info.name).toString()).toBe('tiny-2026.11.tar.gz');
    const len = info['piece length'];
    const pieces: Buffer[] = [];
    for (let at = 0; at < archive.length; at += len) pieces.push(createHash('sha1').update(archive.subarray(at, at + len)).digest());
    expect(pieces.length).toBeGreaterThan(10);
    expect(Buffer.from(info.pieces).equals(Buffer.concat(pieces))).toBe(true);

    const { rows: ev } = await t.db.query<{ data: any }>("SELECT data FROM events WHERE type = 'image.published'");
    expect(ev).toHaveLength(1);
    expect(ev[0]!.data).toMatchObject({ name: 'tiny-2026.11', sha256, size: archive.length, infohash: image.infohash });
  });

  it('lists and shows the image to users', async () => {
    const list = await ok(t.app, 200, 'GET', '/v1/images', w.user);
    expect(list.images).toEqual([image]);
    expect(await ok(t.app, 200, 'GET', '/v1/images/tiny-2026.11', w.user)).toEqual(image);
    expect((await call(t.app, 'GET', '/v1/images/nope', w.user)).status).toBe(404);
  });

  it('refuses non-admins (403) and anonymous callers (401), keeping nothing', async () => {
    const asUser = await upload('name=mine', archive, w.pi);
    expect(asUser.statusCode).toBe(403);
    expect(asUser.json()).toMatchObject({ code: 'forbidden', status: 403 });
    expect(asUser.headers['content-type']).toMatch(/^application\/problem\+json/);
    const anon = await upload('name=mine', archive, null);
    expect(anon.statusCode).toBe(401);
    expect(anon.json().code).toBe('unauthorized');
    expect(await rowCount('mine')).toBe(0);
    expect(files()).toEqual([sha256]);
  });

  it('answers 400 naming the field for a bad name or kinds, and 415 for another body type', async () => {
    const badName = await upload('name=Bad%20Name', archive, w.admin);
    expect(badName.statusCode).toBe(400);
    expect(badName.json().detail).toContain('querystring.name');
    const badKinds = await upload('name=ok-name&kinds=lxc,docker', archive, w.admin);
    expect(badKinds.statusCode).toBe(400);
    expect(badKinds.json().detail).toContain('querystring.kinds');
    const noKinds = await upload('name=ok-name&kinds=', archive, w.admin);
    expect(noKinds.statusCode).toBe(400);
    const missing = await upload('kinds=lxc', archive, w.admin);
    expect(missing.statusCode).toBe(400);
    expect(missing.json().detail).toContain("'name'");
    const json = await t.app.inject({ method: 'POST', url: '/v1/images?name=ok-name', headers: { authorization: `Bearer ${w.admin}`, 'content-type': 'application/json' }, payload: '{}' });
    expect(json.statusCode).toBe(415);
    expect(await rowCount('ok-name')).toBe(0);
    expect(files()).toEqual([sha256]);
  });

  it('refuses an existing name with 409: images are immutable', async () => {
    const again = await upload('name=tiny-2026.11', randomBytes(1000), w.admin);
    expect(again.statusCode).toBe(409);
    expect(again.json().code).toBe('already_exists');
    expect(await ok(t.app, 200, 'GET', '/v1/images/tiny-2026.11', w.user)).toEqual(image);
  });

  it('refuses an archive whose sha256 is not the x-content-sha256 sent, keeping nothing', async () => {
    const other = randomBytes(70_000);
    const res = await upload('name=mismatch', other, w.admin, { 'x-content-sha256': sha256 });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'checksum_mismatch' });
    expect(res.json().detail).toContain(createHash('sha256').update(other).digest('hex'));
    expect(await rowCount('mismatch')).toBe(0);
    expect(files()).toEqual([sha256]);
  });

  it('refuses more than maxImageBytes with 413, by Content-Length or while streaming, keeping nothing', async () => {
    const big = await upload('name=too-big', Buffer.alloc(MAX + 1), w.admin);
    expect(big.statusCode).toBe(413);
    expect(big.json().code).toBe('payload_too_large');
    // Chunked: no length up front, so the stream itself is cut off at the limit.
    const chunks = async function* () {
      for (let i = 0; i < 5; i++) yield Buffer.alloc(1024 * 1024, i);
    };
    const res = await fetch(`${url}/v1/images?name=too-big`, {
      method: 'POST',
      headers: { authorization: `Bearer ${w.admin}`, 'content-type': 'application/octet-stream' },
      body: ReadableStream.from(chunks()),
      duplex: 'half',
    } as RequestInit).catch((err: unknown) => err);
    // The registry may answer 413 or cut the connection while the client is still sending.
    if (res instanceof Response) {
      expect(res.status).toBe(413);
      expect((await res.json()).code).toBe('payload_too_large');
    }
    await expect.poll(files, { timeout: 5000 }).toEqual([sha256]);
    expect(await rowCount('too-big')).toBe(0);
  });

  it('keeps no file or row when the client disconnects mid-upload', async () => {
    const req = request(`${url}/v1/images?name=cut-short`, {
      method: 'POST',
      headers: { authorization: `Bearer ${w.admin}`, 'content-type': 'application/octet-stream', 'content-length': String(3 * 1024 * 1024) },
    });
    req.on('error', () => {});
    req.write(Buffer.alloc(1024 * 1024, 7));
    // The upload is underway: its temporary file appears…
    await expect.poll(() => files().length, { timeout: 5000 }).toBe(2);
    req.destroy();
    // …and goes when the connection does.
    await expect.poll(files, { timeout: 5000 }).toEqual([sha256]);
    expect(await rowCount('cut-short')).toBe(0);
  });
});

describe('GET /v1/images/{name}/archive', () => {
  it('serves the whole archive without authentication, with Accept-Ranges and the sha256 as ETag', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/v1/images/tiny-2026.11/archive' });
    expect(res.statusCode).toBe(200);
    expect(res.rawPayload.equals(archive)).toBe(true);
    expect(res.headers['accept-ranges']).toBe('bytes');
    expect(res.headers.etag).toBe(`"${sha256}"`);
    expect(Number(res.headers['content-length'])).toBe(archive.length);
    const again = await t.app.inject({ method: 'GET', url: '/v1/images/tiny-2026.11/archive', headers: { 'if-none-match': `"${sha256}"` } });
    expect(again.statusCode).toBe(304);
  });

  it('answers a Range with 206 and exactly those bytes, and an unsatisfiable one with 416', async () => {
    const mid = await t.app.inject({ method: 'GET', url: '/v1/images/tiny-2026.11/archive', headers: { range: 'bytes=100000-165535' } });
    expect(mid.statusCode).toBe(206);
    expect(mid.headers['content-range']).toBe(`bytes 100000-165535/${archive.length}`);
    expect(mid.rawPayload.equals(archive.subarray(100000, 165536))).toBe(true);
    const tail = await t.app.inject({ method: 'GET', url: '/v1/images/tiny-2026.11/archive', headers: { range: 'bytes=-10' } });
    expect(tail.statusCode).toBe(206);
    expect(tail.rawPayload.equals(archive.subarray(archive.length - 10))).toBe(true);
    const open = await t.app.inject({ method: 'GET', url: '/v1/images/tiny-2026.11/archive', headers: { range: `bytes=${archive.length - 5}-` } });
    expect(open.rawPayload.equals(archive.subarray(archive.length - 5))).toBe(true);
    const beyond = await t.app.inject({ method: 'GET', url: '/v1/images/tiny-2026.11/archive', headers: { range: `bytes=${archive.length}-` } });
    expect(beyond.statusCode).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${archive.length}`);
    expect(beyond.json().code).toBe('range_not_satisfiable');
  });

  it('answers HEAD with the headers and no body, and 404 problem+json for an unknown image', async () => {
    const head = await t.app.inject({ method: 'HEAD', url: '/v1/images/tiny-2026.11/archive' });
    expect(head.statusCode).toBe(200);
    expect(Number(head.headers['content-length'])).toBe(archive.length);
    expect(head.headers.etag).toBe(`"${sha256}"`);
    expect(head.rawPayload.length).toBe(0);
    // Over a real socket too, where a HEAD body would corrupt the connection.
    const real = await new Promise<{ status: number; length: string | undefined; body: number }>((resolve, reject) => {
      const req = request(`${url}/v1/images/tiny-2026.11/archive`, { method: 'HEAD', agent: false }, (res) => {
        let body = 0;
        res.on('data', (c: Buffer) => (body += c.length));
        res.on('end', () => resolve({ status: res.statusCode!, length: res.headers['content-length'], body }));
      });
      req.on('error', reject);
      req.setTimeout(5000, () => req.destroy(new Error('HEAD timed out')));
      req.end();
    });
    expect(real).toEqual({ status: 200, length: String(archive.length), body: 0 });
    const missing = await t.app.inject({ method: 'GET', url: '/v1/images/nope/archive' });
    expect(missing.statusCode).toBe(404);
    expect(missing.headers['content-type']).toMatch(/^application\/problem\+json/);
  });

  it('parses ranges as RFC 9110 says', () => {
    const e = '"x"';
    expect(parseRange(undefined, 10, undefined, e)).toBeNull();
    expect(parseRange('bytes=0-0', 10, undefined, e)).toEqual({ start: 0, end: 0 });
    expect(parseRange('bytes=5-100', 10, undefined, e)).toEqual({ start: 5, end: 9 });
    expect(parseRange('bytes=-3', 10, undefined, e)).toEqual({ start: 7, end: 9 });
    expect(parseRange('bytes=-30', 10, undefined, e)).toEqual({ start: 0, end: 9 });
    expect(parseRange('bytes=10-', 10, undefined, e)).toBe('unsatisfiable');
    expect(parseRange('bytes=-0', 10, undefined, e)).toBe('unsatisfiable');
    expect(parseRange('bytes=0-1,3-4', 10, undefined, e)).toBeNull();
    expect(parseRange('bytes=0-1', 10, '"other"', e)).toBeNull();
  });
});

describe('the tracker', () => {
  it('admits an announce for a published image', async () => {
    const res = await announce(image.infohash);
    expect(res.statusCode).toBe(200);
    const answer = bencode.decode(res.rawPayload) as Record<string, unknown>;
    expect(answer['failure reason']).toBeUndefined();
    expect(answer.interval).toBeGreaterThan(0);
  });

  it('refuses an unknown infohash with a failure reason', async () => {
    const res = await announce('0123456789abcdef0123456789abcdef01234567');
    const answer = bencode.decode(res.rawPayload) as Record<string, Uint8Array>;
    expect(Buffer.from(answer['failure reason']!).toString()).toMatch(/unknown infohash/);
  });
});

describe('BitTorrent end to end', () => {
  it('a client given only the magnet downloads the archive from the registry seeder through the registry tracker', async () => {
    // No web seeds: every byte must come from the registry's seeder over BitTorrent.
    const client = new WebTorrent({ dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false, webSeeds: false });
    clients.push(client);
    client.on('error', () => {});
    const path = join(downloads, 'bt');
    const torrent = client.add(image.magnet, { path });
    await new Promise<void>((resolve, reject) => {
      torrent.on('done', () => resolve());
      torrent.on('error', reject);
    });
    expect(torrent.files).toHaveLength(1);
    const got = readFileSync(join(path, torrent.files[0]!.path));
    expect(createHash('sha256').update(got).digest('hex')).toBe(sha256);
    expect(torrent.files[0]!.name).toBe('tiny-2026.11.tar.gz');
  }, 60_000);

  it('sends the web seed no faster than the seeder upload cap (PLANETLITE_SEED_UPLOAD_KBPS)', async () => {
    const port = await freePort();
    const url2 = `http://127.0.0.1:${port}`;
    // 8000 kbit/s: 1 MB/s; the archive is 1.5 MiB, so even after a full second of tokens the
    // rest takes over half a second (uncapped, loopback moves it in milliseconds).
    const t2 = await testApp({ db: t.db, config: { port, publicUrl: url2, imagesDir, seedUploadKbps: 8000 } });
    try {
      await t2.app.listen({ host: '127.0.0.1', port });
      const deadline = Date.now() + 10_000;
      while (t2.app.ctx.images.seeder.torrents === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(t2.app.ctx.images.seeder.torrents).toBe(1);
      const started = performance.now();
      const res = await fetch(`${url2}/v1/images/tiny-2026.11/archive`);
      const body = Buffer.from(await res.arrayBuffer());
      const ms = performance.now() - started;
      expect(res.status).toBe(200);
      expect(createHash('sha256').update(body).digest('hex')).toBe(sha256);
      expect(ms).toBeGreaterThan(400);
      // A range goes through the cap as well, byte for byte.
      const part = await fetch(`${url2}/v1/images/tiny-2026.11/archive`, { headers: { range: 'bytes=100-199' } });
      expect(part.status).toBe(206);
      expect(Buffer.from(await part.arrayBuffer()).equals(archive.subarray(100, 200))).toBe(true);
    } finally {
      await t2.close();
    }
    expect(files()).toEqual([sha256]);
  }, 60_000);

  it('a registry started on the same database and images directory seeds the images it finds', async () => {
    const port = await freePort();
    const url2 = `http://127.0.0.1:${port}`;
    const t2 = await testApp({ db: t.db, config: { port, publicUrl: url2, imagesDir } });
    try {
      await t2.app.listen({ host: '127.0.0.1', port });
      const client = new WebTorrent({ dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false, webSeeds: false });
      clients.push(client);
      client.on('error', () => {});
      // Only the second registry's tracker, whose only seeder is the second registry's.
      const torrent = client.add(`magnet:?xt=urn:btih:${image.infohash}&tr=${encodeURIComponent(`${url2}/announce`)}`, { path: join(downloads, 'restart') });
      await new Promise<void>((resolve, reject) => {
        torrent.on('done', () => resolve());
        torrent.on('error', reject);
      });
      const got = readFileSync(join(downloads, 'restart', torrent.files[0]!.path));
      expect(createHash('sha256').update(got).digest('hex')).toBe(sha256);
    } finally {
      await t2.close();
    }
    // Closing a registry never deletes a shared images directory's archives.
    expect(files()).toEqual([sha256]);
  }, 60_000);

  it('a client with the torrent and no tracker downloads the archive from the web seed (ranges)', async () => {
    const client = new WebTorrent({ dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false, tracker: false });
    clients.push(client);
    client.on('error', () => {});
    const { rows } = await t.db.query<{ torrent_info: Uint8Array }>('SELECT torrent_info FROM images WHERE name = $1', ['tiny-2026.11']);
    const metainfo = Buffer.concat([Buffer.from('d4:info'), Buffer.from(rows[0]!.torrent_info), Buffer.from(`8:url-listl${Buffer.byteLength(image.web_seed)}:${image.web_seed}ee`)]);
    const path = join(downloads, 'ws');
    const torrent = client.add(metainfo, { path });
    await new Promise<void>((resolve, reject) => {
      torrent.on('done', () => resolve());
      torrent.on('error', reject);
    });
    const got = readFileSync(join(path, torrent.files[0]!.path));
    expect(createHash('sha256').update(got).digest('hex')).toBe(sha256);
  }, 60_000);
});
