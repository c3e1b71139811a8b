// Images: upload (admin), list and show (users), the archive over HTTP (anyone: it is the torrents'
// web seed), and the BitTorrent tracker that admits only the images' torrents.
import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '@planetlite/core';
import { Image, ImageUploadQuery, IMAGE_NAME_PATTERN } from '@planetlite/api';
import { requireAdmin, requireUser } from '../plugins/auth.js';
import { sendProblem } from '../plugins/errors.js';
import * as images from '../repositories/images.js';
import { nodesOfImage } from '../repositories/slivers.js';
import { withChanges } from '../services/changes.js';
import { answers, bearer } from './common.js';

const NameOnly = Type.Object({ name: Type.String({ pattern: IMAGE_NAME_PATTERN }) });
const SHA256_HEX = /^[0-9a-f]{64}$/;

export const imageRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const archives = ctx.images;

  // The archive is the body: handed to the route as the raw stream, never buffered. Scoped to
  // this plugin, so no other route takes octet-stream.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  app.post('/v1/images', {
    bodyLimit: ctx.config.maxImageBytes,
    schema: {
      tags: ['images'],
      summary: 'Upload an image archive (admin). The body is the archive as application/octet-stream; name, kinds, version and arch are query parameters. ' +
        'Images are immutable: an existing name is refused with 409, a new version is a new name (debian12-2026.11). ' +
        'An x-content-sha256 header (hex), when sent, must match the archive.',
      security: bearer,
      querystring: ImageUploadQuery,
      headers: Type.Object({ 'x-content-sha256': Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$' })) }),
      consumes: ['application/octet-stream'],
      response: answers({ 201: Image }),
    },
    // Who and what before a single byte of the body is read.
    preParsing: async (req, reply) => {
      // An early refusal leaves the body unread; Node discards what still comes, and fetch-based
      // clients see this answer while still sending (closing instead makes them see a reset).
      requireAdmin(req);
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/octet-stream') {
        throw new AppError('unsupported_media_type', `send the image archive as application/octet-stream, not '${type || 'nothing'}'`);
      }
      const declared = Number(req.headers['content-length'] ?? NaN);
      if (declared > ctx.config.maxImageBytes) {
        throw new AppError('payload_too_large', `the image archive is larger than ${ctx.config.maxImageBytes} bytes`);
      }
    },
  }, async (req, reply) => {
    const admin = requireAdmin(req);
    const q = req.query;
    const kinds = [...new Set((q.kinds ?? 'lxc').split(','))] as Image['kinds'];
    const expected = req.headers['x-content-sha256']?.toLowerCase();
    const body = req.body;
    if (!(body instanceof Readable)) throw new AppError('invalid_request', 'the body must be the image archive');
    if (await images.imageExists(ctx.db, q.name)) throw new AppError('already_exists', `image ${q.name} exists and images are immutable; upload the new version under a new name (say ${q.name}-2)`);

    const declared = Number(req.headers['content-length'] ?? NaN);
    const got = await archives.receive(body, q.name, { limit: ctx.config.maxImageBytes, contentLength: Number.isFinite(declared) ? declared : undefined }).catch((err: unknown) => {
      // Cut off mid-body (too large while streaming): the connection cannot carry another request.
      reply.header('connection', 'close');
      throw err;
    });
    let kept = false;
    try {
      if (expected !== undefined && (!SHA256_HEX.test(expected) || expected !== got.sha256)) {
        // Gone before the answer leaves, so a client that sees it finds nothing kept.
        await archives.discard(got);
        return sendProblem(reply, 400, 'checksum_mismatch', `the archive's sha256 is ${got.sha256}, not ${expected} as x-content-sha256 says; nothing was kept`);
      }
      const magnet = archives.magnetOf({ infohash: got.infohash, torrentName: got.torrentName, size: got.size, name: q.name });
      const image = await withChanges(ctx, async (tx, changes) => {
        const row = await images.insertImage(tx, {
          name: q.name, version: q.version ?? null, arch: q.arch ?? 'x86_64', sha256: got.sha256, size: got.size, kinds,
          infohash: got.infohash, magnet, file: got.sha256, torrentInfo: got.info, createdBy: admin.id,
        }, ctx.config.publicUrl);
        await changes.record(tx, {
          type: 'image.published',
          data: { name: q.name, version: q.version ?? null, arch: q.arch ?? 'x86_64', sha256: got.sha256, size: got.size, kinds, infohash: got.infohash, by: admin.email },
        });
        // Slices may name an image before it is published: their nodes' documents now carry its hash and magnet.
        changes.touchAfterCommit((db) => nodesOfImage(db, q.name));
        // Last, so a refused insert leaves the file where the finally below removes it.
        await archives.keep(got);
        kept = true;
        return row;
      });
      archives.published({ name: q.name, file: got.sha256, size: got.size, torrent_info: got.info, infohash: got.infohash });
      return reply.code(201).send(image);
    } finally {
      if (!kept) await archives.discard(got);
    }
  });

  app.get('/v1/images', {
    schema: { tags: ['images'], summary: 'Published images', security: bearer, response: answers({ 200: Type.Object({ images: Type.Array(Image) }) }) },
  }, async (req) => {
    requireUser(req);
    return { images: await images.listImages(ctx.db, ctx.config.publicUrl) };
  });

  app.get('/v1/images/:name', {
    schema: { tags: ['images'], summary: 'One image', security: bearer, params: NameOnly, response: answers({ 200: Image }) },
  }, async (req) => {
    requireUser(req);
    const image = await images.findImage(ctx.db, req.params.name, ctx.config.publicUrl);
    if (!image) throw new AppError('not_found', `image ${req.params.name} not found`);
    return image;
  });

  // No authentication: nodes and webtorrent's web seed fetch it; the archive is no secret, and
  // its sha256 (published to authenticated callers) is what nodes trust.
  app.route({
    method: ['GET', 'HEAD'],
    url: '/v1/images/:name/archive',
    exposeHeadRoute: false,
    schema: {
      tags: ['images'],
      summary: 'The image archive (web seed of its torrent). Single byte ranges (Range: bytes=…) answer 206; ETag is the sha256.',
      params: NameOnly,
    },
    handler: async (req, reply) => {
      const img = await images.imageArchive(ctx.db, req.params.name);
      if (!img) throw new AppError('not_found', `image ${req.params.name} not found`);
      const here = await archives.archivePath(img.file);
      if (!here) throw new AppError('not_found', `the archive of image ${req.params.name} is not held by this registry`);
      const etag = `"${img.sha256}"`;
      reply.header('accept-ranges', 'bytes').header('etag', etag).header('content-type', 'application/octet-stream');
      const dn = img.magnet ? new URLSearchParams(img.magnet.slice(img.magnet.indexOf('?') + 1)).get('dn') : null;
      if (dn) reply.header('content-disposition', `attachment; filename="${dn.replace(/["\\\r\n]/g, '_')}"`);
      if (req.headers['if-none-match'] === etag) return reply.code(304).send();

      const ifRange = req.headers['if-range'];
      const range = parseRange(req.headers.range, here.size, typeof ifRange === 'string' ? ifRange : undefined, etag);
      if (range === 'unsatisfiable') {
        reply.header('content-range', `bytes */${here.size}`);
        return sendProblem(reply, 416, 'range_not_satisfiable', `the archive has ${here.size} bytes; range '${req.headers.range}' is outside it`);
      }
      const { start, end } = range ?? { start: 0, end: here.size - 1 };
      if (range) reply.code(206).header('content-range', `bytes ${start}-${end}/${here.size}`);
      reply.header('content-length', String(Math.max(0, end - start + 1)));
      if (req.method === 'HEAD' || here.size === 0) return reply.send();
      return reply.send(archives.archiveStream(here.path, start, end));
    },
  });

  // The tracker (BEP 3 http announce and scrape). bittorrent-tracker parses the query itself
  // (info_hash is binary) and answers in bencode on the raw response.
  for (const action of ['announce', 'scrape'] as const) {
    app.get(`/${action}`, { schema: { hide: true } }, (req, reply) => {
      reply.hijack();
      archives.tracker(action, req.raw, reply.raw);
    });
  }
};

/**
 * One byte range of a Range header, null for the whole file (no header, a multi-range or one
 * this parser ignores, or a stale If-Range), or 'unsatisfiable'.
 */
export function parseRange(header: string | undefined, size: number, ifRange: string | undefined, etag: string): { start: number; end: number } | null | 'unsatisfiable' {
  if (!header || (ifRange !== undefined && ifRange !== etag)) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return null;
    if (start >= size) return 'unsatisfiable';
  }
  return { start, end };
}
