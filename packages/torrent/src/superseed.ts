// The registry's seeder serves each piece of an image to one node at a time (after BEP 16's
// super-seeding, which webtorrent lacks). The registry's uplink is the one every node of a swarm
// draws on; when it sent a piece to a node a moment ago, another node asking for the same piece
// will get it from that node soon, so the seeder refuses it (a BEP 6 reject) and spends its uplink
// on a piece the swarm does not have yet. The nodes' fetcher asks the seeder for something else
// (preferPeers). After the window, a piece is served again to whoever asks: the node that had it
// may be slow to pass it on. When that node leaves (its wire closes), its pieces are served again
// at once: no one else may have them.
import type { Torrent, Wire } from 'webtorrent';
import { decideRequests } from './hooks.js';

/** Applies the policy to every wire of a seeded torrent; windowMs 0 turns it off. */
export function superSeed(torrent: Torrent, windowMs: number, now: () => number = Date.now): void {
  if (windowMs <= 0) return;
  /** Per piece: the peer it last went to, and when that began. */
  const to = new Map<number, { peer: string; at: number }>();
  torrent.on('wire', (wire: Wire) => {
    wire.once('close', () => {
      for (const [index, last] of to) if (last.peer === wire.peerId) to.delete(index);
    });
    decideRequests(wire, (index, peer) => {
      const t = now();
      const last = to.get(index);
      if (last && last.peer !== peer && t - last.at < windowMs) return false;
      if (!last || last.peer !== peer) to.set(index, { peer, at: t });
      return true;
    });
  });
}
