// The seeder's one-node-at-a-time policy, decision by decision, on stand-in wires (the swarm
// end-to-end test and the images benchmark show what it does to real swarms).
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { Torrent } from 'webtorrent';
import { superSeed } from './superseed.js';

class StandInWire extends EventEmitter {
  served: Array<[number, number]> = [];
  rejected: Array<[number, number]> = [];
  constructor(public peerId: string, public hasFast = true, public amChoking = false) {
    super();
  }
  _onRequest(index: number, offset: number): void {
    this.served.push([index, offset]);
  }
  reject(index: number, offset: number): void {
    this.rejected.push([index, offset]);
  }
}

function seeded(windowMs: number) {
  const torrent = new EventEmitter();
  let clock = 1_000_000;
  superSeed(torrent as unknown as Torrent, windowMs, () => clock);
  const wire = (peer: string, opts: { hasFast?: boolean; amChoking?: boolean } = {}) => {
    const w = new StandInWire(peer, opts.hasFast ?? true, opts.amChoking ?? false);
    torrent.emit('wire', w);
    return w;
  };
  return { wire, tick: (ms: number) => (clock += ms) };
}

describe('superSeed', () => {
  it('serves a piece to one node, refuses it to others within the window, and serves it again after', () => {
    const s = seeded(15_000);
    const a = s.wire('aa');
    const b = s.wire('bb');
    a._onRequest(7, 0, 16384);
    a._onRequest(7, 16384, 16384); // the rest of the piece, to the same node
    b._onRequest(7, 0, 16384);
    b._onRequest(8, 0, 16384); // another piece: nobody has it
    expect(a.served).toEqual([[7, 0], [7, 16384]]);
    expect(b.rejected).toEqual([[7, 0]]);
    expect(b.served).toEqual([[8, 0]]);
    s.tick(15_000);
    b._onRequest(7, 0, 16384);
    expect(b.served).toEqual([[8, 0], [7, 0]]);
    // Now b had it last: a is refused until the window passes again.
    a._onRequest(7, 0, 16384);
    expect(a.rejected).toEqual([[7, 0]]);
  });

  it('serves a node that reconnects under its peer id, and leaves choked and pre-BEP 6 peers to webtorrent', () => {
    const s = seeded(15_000);
    s.wire('aa')._onRequest(3, 0, 16384);
    const again = s.wire('aa');
    again._onRequest(3, 16384, 16384);
    expect(again.served).toEqual([[3, 16384]]);
    // No fast extension: a request cannot be refused, only served.
    const old = s.wire('cc', { hasFast: false });
    old._onRequest(3, 0, 16384);
    expect(old.served).toEqual([[3, 0]]);
    // A choked peer's request goes to webtorrent, which refuses it itself.
    const choked = s.wire('dd', { amChoking: true });
    choked._onRequest(3, 0, 16384);
    expect(choked.served).toEqual([[3, 0]]);
  });

  it('serves at once the pieces of a node that left, before the window is over', () => {
    const s = seeded(15_000);
    const a = s.wire('aa');
    const b = s.wire('bb');
    const c = s.wire('cc');
    a._onRequest(4, 0, 16384);
    c._onRequest(5, 0, 16384);
    b._onRequest(4, 0, 16384);
    b._onRequest(5, 0, 16384);
    expect(b.rejected).toEqual([[4, 0], [5, 0]]);
    // a is gone (its wire closed): nobody else may hold piece 4. c stays, and keeps piece 5.
    a.emit('close');
    b._onRequest(4, 0, 16384);
    b._onRequest(5, 0, 16384);
    expect(b.served).toEqual([[4, 0]]);
    expect(b.rejected).toEqual([[4, 0], [5, 0], [5, 0]]);
  });

  it('does nothing with a window of 0', () => {
    const s = seeded(0);
    const a = s.wire('aa');
    const b = s.wire('bb');
    a._onRequest(1, 0, 16384);
    b._onRequest(1, 0, 16384);
    expect(b.served).toEqual([[1, 0]]);
    expect(b.rejected).toEqual([]);
  });
});
