// The part of webtorrent 3 (which ships no types) that PlanetLite uses: the registry's image
// seeder and the agent's image fetcher. One copy for both; each app's tsconfig includes it.
declare module 'webtorrent' {
  import type { EventEmitter } from 'node:events';
  import type { AddressInfo } from 'node:net';

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
    /** Every byte received from any wire, duplicates and failed pieces included. */
    received: number;
    uploaded: number;
    numPeers: number;
    destroyed: boolean;
    length: number;
    path: string;
    files: Array<{ name: string; path: string; length: number }>;
    addWebSeed(url: string): void;
    /** One entry per piece (null once verified); set when the metadata is there. */
    pieces?: unknown[];
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
    /** The package's version, e.g. "3.0.21". */
    static VERSION: string;
    constructor(opts?: ClientOptions);
    /** The TCP port it takes peers on, once listening. */
    torrentPort: number;
    /** This client's peer id, hex. */
    peerId: string;
    torrents: Torrent[];
    listening: boolean;
    destroyed: boolean;
    address(): AddressInfo | null;
    add(torrentId: string | Uint8Array, opts?: AddOptions, onTorrent?: (t: Torrent) => void): Torrent;
    seed(input: string | string[], opts?: AddOptions & { name?: string }, onSeed?: (t: Torrent) => void): Torrent;
    remove(torrentId: string | Torrent, opts?: { destroyStore?: boolean }, cb?: (err: Error | null) => void): Promise<void>;
    destroy(cb?: (err: Error | null) => void): void;
  }
  export type { Torrent, Wire, ChunkStore, ChunkStoreClass, ClientOptions };
}
