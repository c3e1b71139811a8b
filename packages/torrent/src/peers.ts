// The registry's seeder is known to nodes by its peer id: what it sends is counted apart from what
// other nodes send, and a node asks it only for pieces its peers lack (preferPeers).
import { randomBytes } from 'node:crypto';

/** Peer ids of registry seeders begin with this (Azureus style: -XXXXXX-). */
export const REGISTRY_PEER_ID_PREFIX = '-PLREG-';
const PREFIX_HEX = Buffer.from(REGISTRY_PEER_ID_PREFIX).toString('hex');

/** A new 20-byte peer id for a registry seeder. */
export function registryPeerId(): Buffer {
  return Buffer.concat([Buffer.from(REGISTRY_PEER_ID_PREFIX), randomBytes(20 - REGISTRY_PEER_ID_PREFIX.length)]);
}

/** Whether a peer id (hex, as webtorrent gives it) is a registry seeder's. */
export function isRegistryPeer(peerIdHex: string | undefined): boolean {
  return typeof peerIdHex === 'string' && peerIdHex.startsWith(PREFIX_HEX);
}
