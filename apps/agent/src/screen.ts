// The agent's edge for desired-state documents: the registry is trusted to say what to run, not
// to be right, so each sliver's document is checked against the API's TypeBox schema and the
// node's own rules before any host command uses a value of it. A sliver refused here is a
// visible sliver error; the rest of the document goes on.
import { isIP } from 'node:net';
import { cpus, totalmem } from 'node:os';
import { FormatRegistry, TypeRegistry } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { DesiredSliver, IMAGE_NAME_PATTERN, SLICE_NAME_PATTERN, type DesiredState } from '@planetlite/api';

// The schema check (compiled below) refuses formats it does not know: those the document uses.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
if (!FormatRegistry.Has('uuid')) FormatRegistry.Set('uuid', (v) => UUID.test(v));
// The API's string enums are Type.Unsafe (plain JSON Schema enum): checked by their values.
if (!TypeRegistry.Has('Unsafe')) TypeRegistry.Set('Unsafe', (schema: { enum?: unknown[] }, value) => !Array.isArray(schema.enum) || schema.enum.includes(value));
if (!FormatRegistry.Has('date-time')) FormatRegistry.Set('date-time', (v) => /^\d{4}-\d{2}-\d{2}T/.test(v) && !Number.isNaN(Date.parse(v)));
// Compiled once: a document of 2,000 slivers is checked in a few ms, where the interpreting
// Value.Check took 30-100 ms on every document (a cost per change that grew with the node).
const SLIVER = TypeCompiler.Compile(DesiredSliver);

/** Bounds of what one node takes from one document. */
export const LIMITS = {
  slivers: 100_000,
  keys: 4096,
  keyChars: 16_384,
  keysChars: 1024 * 1024,
  urlChars: 4096,
};

const SLICE = new RegExp(SLICE_NAME_PATTERN);
const IMAGE = new RegExp(IMAGE_NAME_PATTERN);
const SHA256 = /^[0-9a-f]{64}$/;
/** One OpenSSH public key on one line, without authorized_keys options in front. */
const SSH_KEY = /^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+={0,3}( [^\x00-\x1f\x7f]*)?$/;

export interface Screened {
  /** The slivers that passed, in document order. */
  accepted: DesiredSliver[];
  /** Refused slivers (by id) and why, in one line each. */
  refused: Map<string, string>;
  /** Entries without a usable id: they cannot be reported, only logged. */
  unnamed: string[];
}

/** The node's own figures a sliver may not go beyond. */
export interface NodeBounds {
  memoryMb: number;
  cpuPercent: number;
}

export function nodeBounds(): NodeBounds {
  return { memoryMb: Math.floor(totalmem() / (1024 * 1024)), cpuPercent: 100 * cpus().length };
}

/** Throws when the document as a whole is unusable (nothing of it is carried out then). */
export function screenDesiredState(doc: unknown, bounds: NodeBounds = nodeBounds()): Screened {
  const d = doc as Partial<DesiredState> | null;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) throw new Error('desired state refused: not a JSON object');
  if (!Array.isArray(d.slivers)) throw new Error('desired state refused: slivers is not a list');
  if (d.slivers.length > LIMITS.slivers) throw new Error(`desired state refused: ${d.slivers.length} slivers, more than ${LIMITS.slivers}`);
  const w = d.port_window;
  if (!w || !Number.isInteger(w.first) || !Number.isInteger(w.last) || w.first < 1024 || w.last > 65535 || w.first > w.last) throw new Error('desired state refused: port_window is not a range within 1024-65535');
  if (typeof d.address !== 'string' || isIP(d.address) === 0) throw new Error('desired state refused: address is not an IP address');
  const out: Screened = { accepted: [], refused: new Map(), unnamed: [] };
  const seen = new Set<string>();
  d.slivers.forEach((s: unknown, i: number) => {
    const id = (s as { id?: unknown } | null)?.id;
    if (typeof id !== 'string' || !UUID.test(id)) return void out.unnamed.push(`sliver #${i}: no valid id`);
    if (seen.has(id)) return void out.refused.set(id, 'refused by this node: the sliver is in the document twice');
    seen.add(id);
    const why = sliverProblem(s, w, bounds);
    if (why) return void out.refused.set(id, `refused by this node: ${why}`);
    out.accepted.push(s as DesiredSliver);
  });
  // Two live slivers may not forward the same port: in document order, one that overlaps a
  // sliver taken before it is refused (a sliver listed twice holds its ports too: the version
  // this node last accepted keeps running). The taken windows are disjoint and kept sorted, so only
  // the two neighbours of a window can overlap it (N log N a document, not N²).
  const taken: DesiredSliver[] = [];
  out.accepted = out.accepted.filter((s) => {
    if (s.desired === 'deleted') return true;
    let lo = 0;
    let hi = taken.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (taken[mid]!.ports.first < s.ports.first) lo = mid + 1;
      else hi = mid;
    }
    const o = [taken[lo - 1], taken[lo]].find((t) => t && s.ports.first <= t.ports.last && t.ports.first <= s.ports.last);
    if (o) {
      if (!out.refused.has(s.id)) out.refused.set(s.id, `refused by this node: ports ${s.ports.first}-${s.ports.last} overlap those of sliver ${o.id}`);
      return false;
    }
    taken.splice(lo, 0, s);
    return true;
  });
  // Listed twice: neither copy is taken for the sliver's document.
  out.accepted = out.accepted.filter((s) => !out.refused.has(s.id));
  return out;
}

/** The first thing wrong with one sliver's document, or null. */
function sliverProblem(s: unknown, window: { first: number; last: number }, bounds: NodeBounds): string | null {
  if (!SLIVER.Check(s)) {
    const e = SLIVER.Errors(s).First();
    return `${e?.path || 'document'}: ${e?.message ?? 'does not match the schema'}`;
  }
  const v = s as DesiredSliver;
  if (!SLICE.test(v.slice)) return `slice name ${JSON.stringify(v.slice.slice(0, 64))} is not a slice name (${SLICE_NAME_PATTERN})`;
  const img = v.image;
  if (!IMAGE.test(img.name)) return `image name ${JSON.stringify(img.name.slice(0, 64))} is not an image name (${IMAGE_NAME_PATTERN})`;
  if (img.sha256 !== null && !SHA256.test(img.sha256)) return 'image sha256 is not 64 hex digits';
  if (img.magnet !== null && (!img.magnet.startsWith('magnet:?') || img.magnet.length > LIMITS.urlChars)) return 'image magnet is not a magnet link';
  if (img.web_seed !== null && !httpUrl(img.web_seed)) return 'image web_seed is not an http(s) URL';
  const p = v.ports;
  if (p.first > p.last || p.first < window.first || p.last > window.last) return `ports ${p.first}-${p.last} are not within the node's port window ${window.first}-${window.last}`;
  if (v.keys.length > LIMITS.keys) return `${v.keys.length} ssh keys, more than ${LIMITS.keys}`;
  let chars = 0;
  for (const k of v.keys) {
    chars += k.length;
    if (k.length > LIMITS.keyChars || !SSH_KEY.test(k)) return 'an ssh key is not one OpenSSH public key on one line';
  }
  if (chars > LIMITS.keysChars) return `ssh keys of ${chars} characters, more than ${LIMITS.keysChars}`;
  const r = v.resources;
  if (r.memory_mb > bounds.memoryMb) return `memory_mb ${r.memory_mb} is more than this node has (${bounds.memoryMb})`;
  if (r.cpu_cap_percent && r.cpu_cap_percent > bounds.cpuPercent) return `cpu_cap_percent ${r.cpu_cap_percent} is more than this node's cpus give (${bounds.cpuPercent})`;
  return null;
}

function httpUrl(s: string): boolean {
  if (s.length > LIMITS.urlChars || !URL.canParse(s)) return false;
  return ['http:', 'https:'].includes(new URL(s).protocol);
}
