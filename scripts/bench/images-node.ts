// One node of the image distribution benchmark (scripts/bench/images.ts): a fetch-only worker run
// in a node's network namespace. It builds the agent's ImageFetcher, wants one image when told,
// times it, and keeps seeding it to the other nodes until told to exit. Nothing is imported: its
// onReady does nothing.
//
//   nsenter --net=/run/netns/NODE node scripts/bench/images-node.ts --dir DIR --target JSON [--ca FILE]
//
// JSON is {name, sha256, magnet, webSeed}; magnet null is the plain-HTTP mode (web seed only).
// Talks over stdin/stdout, one JSON object a line:
//   out {"event":"loaded"}                        the fetcher is built; waiting for "go"
//   in  go                                        want the image now (the clock starts)
//   out {"event":"progress", ...}                 every second until ready
//   out {"event":"done", seconds, bytes_from_*}   the archive is here and its sha256 checked; with
//                                                 PLANETLITE_BENCH_TRACE=1 also registry_pieces and
//                                                 verified: [piece, ms after go] (who got what when)
//   out {"event":"failed", error}                 an attempt failed (the fetcher retries)
//   in  exit (or stdin closed)                    stop seeding, close, exit
// Its own log (the fetcher's warnings) goes to stderr.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import type { Logger } from '@planetlite/core';
import WebTorrent from 'webtorrent';
import { ImageFetcher, type FetchTarget } from '../../apps/agent/dist/images/fetch.js';

const { values: args } = parseArgs({ options: { dir: { type: 'string' }, target: { type: 'string' }, name: { type: 'string', default: 'node' }, strategy: { type: 'string' }, ca: { type: 'string' } } });
if (!args.dir || !args.target) {
  process.stderr.write('usage: images-node.ts --dir DIR --target JSON\n');
  process.exit(2);
}
const target = JSON.parse(args.target) as FetchTarget;
// The fetcher's module instance of webtorrent is this one (one copy in node_modules), so wrapping
// its client.add here sees the fetcher's torrents: to watch their wires (what each peer sent and
// took, for the progress lines) and, for experiments that are not the product, to change the order
// in which pieces are fetched (experiments of the first benchmark runs; the fetcher now starts at a
// random piece of its own, which is what offset measured):
//   --strategy rarest   webtorrent's rarest-first strategy;
//   --strategy offset   still sequential, but from a random piece on and then round to piece 0.
interface WireLike { type?: string; remoteAddress?: string; downloaded: number; uploaded: number; peerChoking: boolean; amChoking: boolean; requests: unknown[] }
interface TorrentLike {
  uploaded: number; downloaded: number; wires: WireLike[]; numPeers: number; pieces: unknown[];
  once(ev: 'ready', fn: () => void): void;
}
let torrent: TorrentLike | null = null;
const registryPieces: Array<[number, number]> = [];
const verified: Array<[number, number]> = [];
{
  const strategy = args.strategy;
  if (strategy && strategy !== 'rarest' && strategy !== 'offset') throw new Error(`--strategy: rarest or offset, not ${strategy}`);
  const proto = WebTorrent.prototype as unknown as { add: (id: unknown, opts?: object, cb?: unknown) => unknown };
  const add = proto.add;
  proto.add = function (this: unknown, id: unknown, opts: object = {}, cb?: unknown) {
    const t = add.call(this, id, strategy === 'rarest' ? { ...opts, strategy } : opts, cb) as TorrentLike;
    torrent = t;
    // PLANETLITE_BENCH_TRACE=1: which pieces came from the registry's seeder (to find duplicates).
    if (process.env.PLANETLITE_BENCH_TRACE) {
      (t as unknown as { on(ev: 'wire', fn: (w: { peerId?: string; on(ev: 'piece', fn: (i: number, o: number) => void): void }) => void): void }).on('wire', (w) => {
        if (!w.peerId?.startsWith(Buffer.from('-PLREG-').toString('hex'))) return;
        w.on('piece', (i, o) => { if (o === 0) registryPieces.push([i, Math.round(performance.now() - startedAt)]); });
      });
      (t as unknown as { on(ev: 'verified', fn: (i: number) => void): void }).on('verified', (i) => verified.push([i, Math.round(performance.now() - startedAt)]));
    }
    if (strategy === 'offset') {
      t.once('ready', () => {
        const n = t.pieces.length;
        const from = Math.floor(Math.random() * n);
        // A selection from…end ahead of (higher priority than) the whole torrent's. webtorrent merges
        // adjacent or overlapping selections made with select(), whatever their priority, so this
        // one is made as a stream selection, which it keeps apart (a private method).
        (t as unknown as { _select(a: number, b: number, prio: number, notify: undefined, stream: boolean): void })._select(from, n - 1, 1, undefined, true);
      });
    }
    return t;
  };
}
const wires = () => torrent?.wires.map((w) => ({
  peer: w.type === 'webSeed' ? 'webseed' : w.remoteAddress, down: w.downloaded, up: w.uploaded,
  choked: w.peerChoking, choking: w.amChoking, requests: w.requests.length,
}));
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);

/** Whether the fetcher gave up on BitTorrent metadata and downloaded over plain HTTP instead. */
let fellBackToHttp = false;
const logged: string[] = [];
// Just what the fetcher calls of pino's Logger; lines go to stderr, apart from our stdout protocol.
const line = (level: string) => (a: unknown, b?: unknown) => {
  const msg = typeof a === 'string' ? a : String(b ?? '');
  if (/no torrent metadata/.test(msg)) fellBackToHttp = true;
  if (level === 'debug' || level === 'trace') return;
  const text = `${level} ${msg}${typeof a === 'object' && a ? ` ${JSON.stringify(a)}` : ''}`;
  logged.push(text);
  process.stderr.write(`[${args.name}] ${text}\n`);
};
const log = {
  trace: line('trace'), debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error'), fatal: line('fatal'),
  child() { return log; },
} as unknown as Logger;

let startedAt = 0;
let cpuAtStart = process.cpuUsage();
let ticker: NodeJS.Timeout | null = null;
const fetcher = new ImageFetcher({
  dir: args.dir,
  log,
  uploadKbps: null,
  // The registry's CA (--ca FILE), as a node pins it at enrollment: tracker and web seed over HTTPS.
  registryCa: args.ca ? readFileSync(args.ca, 'utf8') : null,
  // Verified is enough: a node in this benchmark imports nothing.
  onReady: async () => {},
  onChange: (_image, state, detail) => {
    if (state === 'ready') {
      const seconds = (performance.now() - startedAt) / 1000;
      if (ticker) clearInterval(ticker);
      const cpu = process.cpuUsage(cpuAtStart);
      const report = fetcher.report().find((r) => r.image === target.name);
      say({
        event: 'done', seconds, fetcher_seconds: detail.seconds,
        bytes_from_peers: report?.bytes_from_peers ?? detail.bytes_from_peers ?? 0,
        bytes_from_registry: report?.bytes_from_registry ?? detail.bytes_from_registry ?? 0,
        bytes_from_webseed: report?.bytes_from_webseed ?? detail.bytes_from_webseed ?? 0,
        fell_back_to_http: fellBackToHttp,
        uploaded_so_far: torrent?.uploaded ?? 0,
        cpu_seconds: (cpu.user + cpu.system) / 1e6,
        cpu_user_seconds: cpu.user / 1e6,
        ...(process.env.PLANETLITE_BENCH_TRACE ? { registry_pieces: registryPieces, verified } : {}),
      });
    } else if (state === 'failed') {
      say({ event: 'failed', error: detail.error ?? null });
    }
  },
});

async function exit(): Promise<void> {
  if (ticker) clearInterval(ticker);
  await Promise.race([fetcher.close(), new Promise((r) => setTimeout(r, 5_000))]);
  process.exit(0);
}

const input = createInterface({ input: process.stdin });
input.on('line', (cmd) => {
  cmd = cmd.trim();
  if (cmd === 'go' && startedAt === 0) {
    startedAt = performance.now();
    cpuAtStart = process.cpuUsage();
    fetcher.want(target);
    ticker = setInterval(() => {
      const r = fetcher.report().find((x) => x.image === target.name);
      const cpu = process.cpuUsage(cpuAtStart);
      if (r) say({ event: 'progress', t: (performance.now() - startedAt) / 1000, ...r, uploaded: torrent?.uploaded ?? 0, cpu_seconds: (cpu.user + cpu.system) / 1e6, wires: wires() });
    }, 1000);
  } else if (cmd === 'exit') {
    void exit();
  }
});
// The benchmark went away: never outlive it.
input.on('close', () => void exit());
process.on('SIGTERM', () => void exit());
say({ event: 'loaded', pid: process.pid });
