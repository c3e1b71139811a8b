// Deterministic names derived from a sliver id: its devices (IFNAMSIZ-bound).
import { createHash } from 'node:crypto';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Host end of a sliver's link (veth or tap). */
export const HOST_PREFIX = 'plh';
/** Veth peer that LXC moves into the sliver. */
export const PEER_PREFIX = 'pls';
/** ifb device that carries a sliver's outbound traffic through its rate cap (see shaping.ts). */
export const IFB_PREFIX = 'pli';
/** Every device this driver makes matches this; the prefixes are reserved for it. */
export const DEVICE_PATTERN = /^pl[hsi][0-9a-f]{12}$/;
/** Marks a device as a sliver's and records whose: names are hashes, the alias is the way back. */
export const ALIAS_PREFIX = 'planetlite-sliver:';

/** Returns the id in canonical (lower-case) form or throws. */
export function sliverId(id: string): string {
  const lower = typeof id === 'string' ? id.toLowerCase() : '';
  if (!UUID.test(lower)) throw new Error(`sliver id must be a uuid: ${JSON.stringify(id)}`);
  return lower;
}

/**
 * Device names: prefix + the first 12 hex digits of sha256(id) = 15 characters, the most
 * IFNAMSIZ allows. A hash, not the id's own digits, because uuid v7/v1 share their leading or
 * trailing digits between slivers made close together. 48 bits make a clash between 500
 * slivers about 1 in 2·10⁹; attach() refuses a name whose alias names another sliver.
 */
export function deviceNames(id: string): { hostIf: string; peerIf: string } {
  const h = nameHash(id);
  return { hostIf: HOST_PREFIX + h, peerIf: PEER_PREFIX + h };
}

/** The sliver's ifb (outbound shaping): same hash as its link, so the same clash rules apply. */
export function ifbName(id: string): string {
  return IFB_PREFIX + nameHash(id);
}

function nameHash(id: string): string {
  return createHash('sha256').update(sliverId(id)).digest('hex').slice(0, 12);
}
