// The part of bittorrent-tracker 11 (which ships no types) the registry's tracker uses: its
// request handler, mounted in fastify, with no servers of its own.
declare module 'bittorrent-tracker' {
  import type { EventEmitter } from 'node:events';
  import type { IncomingMessage, ServerResponse } from 'node:http';

  interface ServerOptions {
    http?: boolean;
    udp?: boolean;
    ws?: boolean;
    stats?: boolean;
    trustProxy?: boolean;
    /** Announce interval told to clients, ms. */
    interval?: number;
    /** Calls cb() to admit an announce, cb(err) to refuse it (err.message becomes the failure reason). */
    filter?: (infoHash: string, params: Record<string, unknown>, cb: (err?: Error | null) => void) => void;
  }

  export class Server extends EventEmitter {
    constructor(opts?: ServerOptions);
    torrents: Record<string, { peers: { length: number } } | undefined>;
    onHttpRequest(req: IncomingMessage, res: ServerResponse, opts?: { action?: 'announce' | 'scrape'; trustProxy?: boolean }): void;
    close(cb?: (err?: Error | null) => void): void;
  }
}
