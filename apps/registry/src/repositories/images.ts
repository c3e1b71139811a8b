// Published images: their rows and torrents.
import type { Queryable } from '@planetlite/db';
import type * as S from '@planetlite/api';
import { iso, type Row } from './columns.js';

/** The columns toImage reads: never the torrent's info dictionary, which can be large. */
const IMAGE_COLUMNS = 'name, version, arch, sha256, size, kinds, infohash, magnet, file, created_at';

/** publicUrl: the registry's, for the web seed link (absent when this registry holds no archive). */
export function toImage(r: Row, publicUrl: string): S.Image {
  const name = r.name as string;
  return {
    name,
    version: (r.version as string | null) ?? null,
    arch: (r.arch as string | null) ?? 'x86_64',
    sha256: r.sha256 as string,
    size: Number(r.size),
    kinds: r.kinds as S.Image['kinds'],
    infohash: (r.infohash as string | null) ?? null,
    magnet: (r.magnet as string | null) ?? null,
    web_seed: r.file ? webSeedOf(publicUrl, name) : null,
    created_at: iso(r.created_at),
  };
}

export const webSeedOf = (publicUrl: string, name: string): string => `${publicUrl}/v1/images/${encodeURIComponent(name)}/archive`;

export async function listImages(q: Queryable, publicUrl: string): Promise<S.Image[]> {
  const { rows } = await q.query(`SELECT ${IMAGE_COLUMNS} FROM images ORDER BY name`);
  return rows.map((r) => toImage(r, publicUrl));
}

export async function findImage(q: Queryable, name: string, publicUrl: string): Promise<S.Image | null> {
  const { rows } = await q.query(`SELECT ${IMAGE_COLUMNS} FROM images WHERE name = $1`, [name]);
  return rows[0] ? toImage(rows[0], publicUrl) : null;
}

export async function imageExists(q: Queryable, name: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM images WHERE name = $1', [name]);
  return rows.length > 0;
}

/** The kinds, architecture and archive sha256 of a published image, for placement checks and spares. */
export async function imageTraits(q: Queryable, name: string): Promise<{ kinds: S.Image['kinds']; arch: string; sha256: string } | null> {
  const { rows } = await q.query<{ kinds: S.Image['kinds']; arch: string | null; sha256: string }>('SELECT kinds, arch, sha256 FROM images WHERE name = $1', [name]);
  return rows[0] ? { kinds: rows[0].kinds, arch: rows[0].arch ?? 'x86_64', sha256: rows[0].sha256 } : null;
}

/** Where the archive of an image is and how to name it, for the web seed route. */
export async function imageArchive(q: Queryable, name: string): Promise<{ sha256: string; file: string | null; magnet: string | null } | null> {
  const { rows } = await q.query<{ sha256: string; file: string | null; magnet: string | null }>('SELECT sha256, file, magnet FROM images WHERE name = $1', [name]);
  return rows[0] ?? null;
}

export interface NewImage {
  name: string;
  version: string | null;
  arch: string;
  sha256: string;
  size: number;
  kinds: S.Image['kinds'];
  infohash: string;
  magnet: string;
  file: string;
  torrentInfo: Buffer;
  createdBy: string;
}

export async function insertImage(q: Queryable, i: NewImage, publicUrl: string): Promise<S.Image> {
  const { rows } = await q.query(
    `INSERT INTO images (name, version, arch, sha256, size, kinds, infohash, magnet, file, torrent_info, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${IMAGE_COLUMNS}`,
    [i.name, i.version, i.arch, i.sha256, i.size, i.kinds, i.infohash, i.magnet, i.file, i.torrentInfo, i.createdBy],
  );
  return toImage(rows[0]!, publicUrl);
}

export async function allInfohashes(q: Queryable): Promise<string[]> {
  const { rows } = await q.query<{ infohash: string }>('SELECT infohash FROM images WHERE infohash IS NOT NULL');
  return rows.map((r) => r.infohash);
}

export async function infohashKnown(q: Queryable, infohash: string): Promise<boolean> {
  const { rows } = await q.query('SELECT 1 FROM images WHERE infohash = $1', [infohash]);
  return rows.length > 0;
}

/** What the seeder needs of an image row. */
export interface SeedableImage {
  name: string;
  file: string;
  size: number;
  torrent_info: Uint8Array;
}

export async function seedableImages(q: Queryable): Promise<SeedableImage[]> {
  const { rows } = await q.query<SeedableImage>(
    'SELECT name, file, size, torrent_info FROM images WHERE file IS NOT NULL AND torrent_info IS NOT NULL ORDER BY name',
  );
  return rows;
}
