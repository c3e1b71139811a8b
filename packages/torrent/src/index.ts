// Image distribution's BitTorrent parts shared by the registry (which makes and seeds the torrents)
// and the node agent (which fetches and seeds them): pieces and the info dictionary, the registry
// seeder's peer id, the super-seeding policy, and every hook into webtorrent's internals.
export { ArchiveHasher, bencode, metainfo, pieceLengthFor, torrentInfo, type Bencodable } from './pieces.js';
export { REGISTRY_PEER_ID_PREFIX, isRegistryPeer, registryPeerId } from './peers.js';
export { superSeed } from './superseed.js';
export {
  HOOKS_APPLY,
  WEBTORRENT_VERSION,
  askAgain,
  batchUpdates,
  decideRequests,
  preferPeers,
  reannounce,
  skipAddresses,
  startAtRandomPiece,
} from './hooks.js';
