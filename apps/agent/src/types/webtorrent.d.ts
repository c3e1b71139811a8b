// The part of webtorrent 3 (which ships no types) that the agent's image fetcher uses.
declare module 'webtorrent' {
  import type { EventEmitter } from 'node:events';

  interface Wire extends EventEmitter {
    type: string;
    /** The remote peer's id, hex (20 bytes); for a web seed, its URL. */
    peerId: string;
    remoteAddress: string;
    destroy(): void;
  }

  interface Torrent extends EventEmitter {
    infoHash: string;
    magnetURI: string;
    ready: boolean;
    done: boolean;
    progress: number;
    downloaded: number;
    uploaded: number;
    length: number;
    path: string;
    files: Array<{ name: string; path: string; length: number }>;
    addWebSeed(url: string): void;
    /** One entry per piece (null once verified); set when the metadata is there. */
    pieces?: unknown[];
    destroy(opts?: { destroyStore?: boolean }, cb?: (err: Error | null) => void): void;
  }

  interface ClientOptions {
    dht?: boolean;
    lsd?: boolean;
    natUpnp?: boolean;
    natPmp?: boolean;
    utp?: boolean;
    webSeeds?: boolean;
    tracker?: boolean | object;
    torrentPort?: number;
    peerId?: string | Uint8Array;
    uploadLimit?: number;
    downloadLimit?: number;
  }

  interface AddOptions {
    path?: string;
    announce?: string[];
    urlList?: string[];
  }

  export default class WebTorrent extends EventEmitter {
    constructor(opts?: ClientOptions);
    /** This client's peer id, hex. */
    peerId: string;
    torrents: Torrent[];
    add(torrentId: string | Buffer, opts?: AddOptions, onTorrent?: (t: Torrent) => void): Torrent;
    seed(input: string | string[], opts?: AddOptions & { name?: string; private?: boolean }, onSeed?: (t: Torrent) => void): Torrent;
    remove(torrentId: string | Torrent, opts?: { destroyStore?: boolean }, cb?: (err: Error | null) => void): Promise<void>;
    destroy(cb?: (err: Error | null) => void): void;
  }
  export type { Torrent, Wire };
}
