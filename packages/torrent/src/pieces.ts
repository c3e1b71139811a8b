// What makes an image archive a torrent: its piece length, the SHA-1 of each piece, and the
// bencoded info dictionary whose SHA-1 is the infohash. The registry hashes an upload in the same
// pass that writes it; nodes check pieces through webtorrent, and the sha256 themselves.
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * About 256 pieces of 64 KiB to 16 MiB (1 MiB for a 256 MiB image); 1 MiB when the size is not
 * known up front (chunked uploads). webtorrent scans the pieces for every wire on every block it
 * receives, so its CPU time grows with the piece count; 256 pieces still give a swarm of a hundred
 * nodes plenty to trade, and the web seed gets one range request per piece.
 */
export function pieceLengthFor(size: number | undefined): number {
  if (!size || !Number.isFinite(size)) return 1024 * 1024;
  let len = 64 * 1024;
  while (len < 16 * 1024 * 1024 && size / len > 256) len *= 2;
  return len;
}

/** Passes an archive through while hashing it whole (sha256) and per piece (sha1). */
export class ArchiveHasher extends Transform {
  size = 0;
  readonly #sha256 = createHash('sha256');
  readonly #pieces: Buffer[] = [];
  #piece: Hash = createHash('sha1');
  #inPiece = 0;
  #head = Buffer.alloc(0);

  /** More than limit bytes fails the stream with tooLarge(). */
  constructor(
    readonly pieceLength: number,
    private readonly limit: number,
    private readonly tooLarge: () => Error = () => new Error(`the image archive is larger than ${limit} bytes`),
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.size += chunk.length;
    if (this.size > this.limit) {
      cb(this.tooLarge());
      return;
    }
    if (this.#head.length < 8) this.#head = Buffer.concat([this.#head, chunk.subarray(0, 8 - this.#head.length)]);
    this.#sha256.update(chunk);
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(this.pieceLength - this.#inPiece, chunk.length - at);
      this.#piece.update(chunk.subarray(at, at + take));
      this.#inPiece += take;
      at += take;
      if (this.#inPiece === this.pieceLength) {
        this.#pieces.push(this.#piece.digest());
        this.#piece = createHash('sha1');
        this.#inPiece = 0;
      }
    }
    cb(null, chunk);
  }

  sha256(): string {
    return this.#sha256.digest('hex');
  }

  pieces(): Buffer {
    if (this.#inPiece > 0) {
      this.#pieces.push(this.#piece.digest());
      this.#inPiece = 0;
    }
    return Buffer.concat(this.#pieces);
  }

  /** The archive's kind by its magic bytes, so a node keeps a file it can recognise. */
  suffix(): string {
    const h = this.#head;
    if (h[0] === 0x1f && h[1] === 0x8b) return '.tar.gz';
    if (h.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return '.tar.xz';
    if (h.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return '.tar.zst';
    return '.tar';
  }
}

/** A private single-file torrent's info dictionary, bencoded, and its infohash (hex). */
export function torrentInfo(file: { name: string; length: number; pieceLength: number; pieces: Buffer }): { info: Buffer; infohash: string } {
  const info = bencode({ length: file.length, name: file.name, 'piece length': file.pieceLength, pieces: file.pieces, private: 1 });
  return { info, infohash: createHash('sha1').update(info).digest('hex') };
}

/** A torrent's metainfo: the announce URL as it is reachable now, and the info dictionary as made at upload. */
export function metainfo(announce: string, info: Buffer): Buffer {
  return Buffer.concat([Buffer.from('d8:announce'), byteString(announce), Buffer.from('4:info'), info, Buffer.from('e')]);
}

// ---- bencoding: just what a torrent's info dictionary needs ------------------------------------
export type Bencodable = number | string | Buffer | Bencodable[] | { [key: string]: Bencodable };

function byteString(s: string | Buffer): Buffer {
  if (typeof s === 'string') return Buffer.from(`${Buffer.byteLength(s)}:${s}`);
  return Buffer.concat([Buffer.from(`${s.length}:`), s]);
}

export function bencode(v: Bencodable): Buffer {
  const parts: Buffer[] = [];
  const walk = (x: Bencodable): void => {
    if (typeof x === 'number') {
      if (!Number.isSafeInteger(x)) throw new Error(`bencode: ${x} is not an integer`);
      parts.push(Buffer.from(`i${x}e`));
    } else if (typeof x === 'string' || Buffer.isBuffer(x)) {
      parts.push(byteString(x));
    } else if (Array.isArray(x)) {
      parts.push(Buffer.from('l'));
      x.forEach(walk);
      parts.push(Buffer.from('e'));
    } else {
      parts.push(Buffer.from('d'));
      // Keys in raw byte order, as the spec demands (the infohash depends on it).
      for (const k of Object.keys(x).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))) {
        walk(k);
        walk(x[k] as Bencodable);
      }
      parts.push(Buffer.from('e'));
    }
  };
  walk(v);
  return Buffer.concat(parts);
}
