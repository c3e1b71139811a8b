// The part of webtorrent 3 (which ships no types) that the registry's image seeder uses.
declare module 'webtorrent' {
  import type { EventEmitter } from 'node:events';
  import type { AddressInfo } from 'node:net';

  interface Torrent extends EventEmitter {
    infoHash: string;
    magnetURI: string;
    ready: boolean;
    done: boolean;
    progress: number;
    uploaded: number;
    numPeers: number;
    destroy(opts?: { destroyStore?: boolean }, cb?: (err: Error | null) => void): void;
  }

  /** An abstract-chunk-store: what webtorrent reads pieces from and writes them to. */
  interface ChunkStore {
    readonly chunkLength: number;
    get(index: number, opts: { offset?: number; length?: number } | null | undefined, cb: (err: Error | null, buf?: Uint8Array) => void): void;
    put(index: number, buf: Uint8Array, cb?: (err: Error | null) => void): void;
    close(cb?: (err: Error | null) => void): void;
    destroy(cb?: (err: Error | null) => void): void;
  }
  type ChunkStoreClass = new (chunkLength: number, opts: Record<string, unknown>) => ChunkStore;

  interface ClientOptions {
    dht?: boolean;
    lsd?: boolean;
    natUpnp?: boolean;
    natPmp?: boolean;
    utp?: boolean;
    utPex?: boolean;
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
    private?: boolean;
    skipVerify?: boolean;
    store?: ChunkStoreClass;
    storeOpts?: Record<string, unknown>;
  }

  export default class WebTorrent extends EventEmitter {
    constructor(opts?: ClientOptions);
    torrents: Torrent[];
    listening: boolean;
    destroyed: boolean;
    address(): AddressInfo | null;
    add(torrentId: string | Uint8Array, opts?: AddOptions, onTorrent?: (t: Torrent) => void): Torrent;
    remove(torrentId: string | Torrent, opts?: { destroyStore?: boolean }, cb?: (err: Error | null) => void): Promise<void>;
    destroy(cb?: (err: Error | null) => void): void;
  }
  export type { Torrent, ChunkStore, ChunkStoreClass, ClientOptions };
}
