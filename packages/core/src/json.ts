/**
 * Whether two JSON values (parsed documents, or objects built to be sent as JSON) say the same
 * thing: same types, same array elements in order, same object keys with equal values (in any
 * key order); a key whose value is undefined counts as absent, as in JSON.stringify. It allocates
 * nothing, unlike comparing JSON.stringify of each side: the agent compares thousands of slivers'
 * parts on every change. (node:util's isDeepStrictEqual tells an undefined key from an absent
 * one, which JSON does not.)
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!jsonEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let n = 0;
  for (const k in x) {
    if (x[k] === undefined) continue;
    n++;
    if (!Object.hasOwn(y, k) || !jsonEqual(x[k], y[k])) return false;
  }
  for (const k in y) if (y[k] !== undefined) n--;
  return n === 0;
}
