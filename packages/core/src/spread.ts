/**
 * Where in a fleet-wide period something of `key` (a node's id) happens, as a fraction in [0, 1):
 * FNV-1a of the key. The same key always lands at the same place, and a fleet's keys spread
 * evenly, so nodes whose clocks NTP keeps in step do not all act at the same instant.
 */
export function spreadOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return (h >>> 0) / 2 ** 32;
}
