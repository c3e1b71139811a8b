// Every use of webtorrent's private members, in one file. webtorrent 3 gives no public way to
// choose which piece to ask of which peer, to refuse a request, or to ask again; PlanetLite's image
// distribution needs all three (docs/benchmarks.md, image distribution). These hooks were written
// against webtorrent 3.0 and are guarded by its version: under another major version, or when a
// member they need is missing, each does nothing and webtorrent's own behaviour applies.
// hooks.test.ts checks that every member is there in the installed version.
import WebTorrent, { type Torrent, type Wire } from 'webtorrent';

/** The webtorrent this runs with (its own VERSION: a bundled program has no package.json to read). */
export const WEBTORRENT_VERSION: string = String(WebTorrent.VERSION);

/** Whether the hooks apply: they know webtorrent 3's internals only. */
export const HOOKS_APPLY = /^3\./.test(WEBTORRENT_VERSION);

interface WireInternals {
  type?: string;
  peerId?: string;
  peerChoking: boolean;
  amChoking: boolean;
  hasFast: boolean;
  destroyed: boolean;
  requests: unknown[];
  peerPieces: { get(i: number): boolean };
  on(event: 'reject', fn: (index: number, offset: number, length: number) => void): void;
  _onRequest(index: number, offset: number, length: number): void;
  reject(index: number, offset: number, length: number): void;
}

interface TorrentInternals {
  wires: WireInternals[];
  pieces: unknown[];
  destroyed: boolean;
  discovery?: { tracker?: { update(): void } | null } | null;
  _select?: (from: number, to: number, priority: number, notify: undefined, stream: boolean) => void;
  _update(): void;
  _updateWire(wire: WireInternals): unknown;
  _updateWireWrapper(): void;
  _validAddr?: (addr: string) => boolean;
}

/** The members of a torrent and of a wire the hooks use (hooks.test.ts looks for each). */
export const TORRENT_MEMBERS = ['_select', '_update', '_updateWire', '_updateWireWrapper', '_validAddr', 'discovery'] as const;
export const WIRE_MEMBERS = ['_onRequest', 'reject', 'peerPieces', 'requests', 'hasFast', 'amChoking', 'peerChoking'] as const;

const inside = (torrent: Torrent) => torrent as unknown as TorrentInternals;

/**
 * webtorrent fetches pieces in order from piece 0, so nodes that start together want the same
 * pieces at the same time and have nothing to trade: the registry's link then carries a copy per
 * node. Each node starts at a random piece instead. Its 'rarest' strategy would do that too, but
 * scans every piece per request (CPU-bound here). The public select() merges adjacent ranges
 * whatever their priority, so this uses the private _select with a stream selection, which stays
 * apart; without it, the order stays.
 */
export function startAtRandomPiece(torrent: Torrent): void {
  const n = torrent.pieces?.length ?? 0;
  const select = inside(torrent)._select;
  if (!HOOKS_APPLY || n < 2 || typeof select !== 'function') return;
  select.call(torrent, Math.floor(Math.random() * n), n - 1, 1, undefined, true);
}

/**
 * webtorrent revisits every wire's requests, scanning the pieces for each, after every 16 KiB
 * block it receives (a queued microtask each): at 8 peers that was most of a node's CPU time.
 * Here the blocks that arrive together (one socket read holds several) share one such pass, run
 * once the reads are done.
 */
export function batchUpdates(torrent: Torrent): void {
  const t = inside(torrent);
  if (!HOOKS_APPLY || typeof t._updateWireWrapper !== 'function') return;
  let queued = false;
  t._update = function (this: TorrentInternals) {
    if (queued) return;
    queued = true;
    setImmediate(() => {
      queued = false;
      if (!this.destroyed) this._updateWireWrapper();
    });
  };
}

/**
 * Asks every wire for pieces again. webtorrent asks only on a wire's events (a block, a have, an
 * unchoke): after the seeder refused every piece a wire asked for, no event came and nothing was
 * asked of any source again, for good (issue 18).
 */
export function askAgain(torrent: Torrent): void {
  if (HOOKS_APPLY) inside(torrent)._update?.();
}

/** Announces to the tracker now rather than at its interval (minutes): nodes that start together meet. */
export function reannounce(torrent: Torrent): void {
  if (HOOKS_APPLY) inside(torrent).discovery?.tracker?.update();
}

/**
 * Never connects to an address `skip` names (host without brackets, port). The tracker lists a
 * node among its own peers, and webtorrent skips only 127.0.0.1 at its own port.
 */
export function skipAddresses(torrent: Torrent, skip: (host: string, port: number) => boolean): void {
  const t = inside(torrent);
  const valid = t._validAddr;
  if (!HOOKS_APPLY || typeof valid !== 'function') return;
  t._validAddr = (addr: string) => {
    if (!valid.call(torrent, addr)) return false;
    const at = addr.lastIndexOf(':');
    return !skip(addr.slice(0, at).replace(/^\[|\]$/g, ''), Number(addr.slice(at + 1)));
  };
}

/**
 * Lets `serve` decide each piece request of a wire: true serves it, false refuses it (a BEP 6
 * reject). Without the fast extension, or while choking, a request cannot be refused: it is served.
 * `serve` gets the wire's peer id (hex).
 */
export function decideRequests(wire: Wire, serve: (index: number, peerId: string) => boolean): void {
  const w = wire as unknown as WireInternals;
  const onRequest = w._onRequest;
  if (!HOOKS_APPLY || typeof onRequest !== 'function') return;
  w._onRequest = function (this: WireInternals, index: number, offset: number, length: number) {
    if (!this.hasFast || this.amChoking || serve(index, this.peerId ?? '')) return onRequest.call(this, index, offset, length);
    return this.reject(index, offset, length);
  };
}

/** How long a piece the registry's seeder refused (it went to another node just now) is not asked of it again. */
const REFUSED_MS = 3000;

/**
 * The registry's uplink is one; other nodes' uplinks are many. webtorrent asks any wire for the
 * next piece it lacks, so nodes took from the registry pieces their peers already held, and the
 * registry sent 2–3 copies of an image to 8 nodes. Here the registry's wires (its seeder, and the
 * web seed once a stall added it) are asked only for pieces that no peer which is not choking this
 * node holds, nor that the seeder refused a moment ago (it serves each piece to one node at a
 * time: superSeed). With no peer that helps, that leaves every piece to the registry.
 */
export function preferPeers(torrent: Torrent, fromRegistry: (wire: Wire) => boolean, stalled: () => boolean): void {
  const t = inside(torrent);
  const update = t._updateWire;
  if (!HOOKS_APPLY || typeof update !== 'function') return;
  const registryWire = (w: WireInternals) => fromRegistry(w as unknown as Wire);
  let heldAt = 0;
  let held = new Uint8Array(0);
  const refusedAt = new Float64Array(t.pieces.length);
  /** Per registry wire, where it takes pieces from: a random piece, anew after each refusal. */
  const cursor = new WeakMap<WireInternals, number>();
  const anywhere = () => Math.floor(Math.random() * t.pieces.length);
  /** Pieces some unchoking peer holds; recomputed at most every 200 ms (called per block). */
  const peersHold = (): Uint8Array => {
    const now = Date.now();
    if (now - heldAt < 200 && held.length === t.pieces.length) return held;
    heldAt = now;
    held = new Uint8Array(t.pieces.length);
    for (const w of t.wires) {
      if (w.destroyed || w.peerChoking || w.type === 'webSeed' || registryWire(w)) continue;
      for (let i = 0; i < held.length; i++) if (!held[i] && w.peerPieces.get(i)) held[i] = 1;
    }
    return held;
  };
  t._updateWire = function (this: TorrentInternals, wire: WireInternals) {
    const registry = registryWire(wire);
    if (!(registry || wire.type === 'webSeed')) return update.call(this, wire);
    if (!cursor.has(wire)) {
      cursor.set(wire, anywhere());
      wire.on('reject', (index: number) => {
        refusedAt[index] = Date.now();
        cursor.set(wire, anywhere());
      });
    }
    // Once the fetch stalled, the peers that say they hold a piece are not sending it: the
    // registry is asked for anything.
    const hold = stalled() ? new Uint8Array(t.pieces.length) : peersHold();
    const now = Date.now();
    const pieces = wire.peerPieces;
    const get = pieces.get;
    // The web seed never refuses: only the seeder's refusals keep a piece from it a while.
    const refused = registry ? (i: number) => now - refusedAt[i]! < REFUSED_MS : () => false;
    const open = (i: number) => !hold[i] && !refused(i) && get.call(pieces, i);
    // webtorrent picks among the pieces this wire offers, in order: for this call, hide the ones
    // above (an own property over the bitfield's method, deleted again), and those before the
    // wire's cursor. Nodes start at random pieces, so they ask the registry for different ones;
    // when one is refused (another node is at it), the cursor jumps elsewhere. The cursor stays
    // put otherwise, so a piece is finished before the next is begun: a new place per request
    // had every node hold many half pieces from the registry and share none for 20 s.
    const from = cursor.get(wire)!;
    const before = wire.requests.length;
    try {
      pieces.get = (i: number) => i >= from && open(i);
      update.call(this, wire);
      if (wire.requests.length > before || wire.destroyed) return;
      pieces.get = open;
      update.call(this, wire);
    } finally {
      delete (pieces as { get?: unknown }).get;
    }
  };
}
