// The agent's own record of the slivers it built: which /30 slot and uid range each holds, which
// image it was made from, and which restart/reset it has carried out. Written before the host is
// touched, so a restarted agent finds every sliver it may have half-built.
//
// One file per sliver (STATE/ledger/ID.json), each written atomically: a change costs one small
// write, where the single slivers.json of earlier versions was rewritten whole — 56 ms of the
// event loop per change at 2,000 slivers. An old slivers.json is moved into the folder at start.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { atomicWrite } from './state.js';
import { idmapBase, IDMAP_FIRST, IDMAP_SIZE, type SliverIdRange } from './subids.js';

export { IDMAP_FIRST, IDMAP_SIZE };

export interface SliverRecord {
  id: string;
  slice: string;
  slot: number;
  idmap_base: number;
  image_sha256: string | null;
  /** 'kvm' for a VM sliver; records from before VM slivers have none and are containers. */
  kind?: 'lxc' | 'kvm';
  restart_seq: number;
  reset_seq: number;
  /** Hash of the member keys last written into the sliver, so unchanged keys cost nothing. */
  keys_hash: string | null;
  /** A spare of the warm pool (warm-pool.ts): built and started ahead, under an id of the agent's
   * own, with no slice in it yet. It becomes a sliver when the registry hands its id out. */
  spare?: true;
  /** docKey of its part of the document as last carried out in full (planner.ts): a restarted
   * agent leaves it alone while the host shows it as that pass left it. */
  done?: string;
}

const LEDGER_DIR = 'ledger';
const OLD_FILE = 'slivers.json';
const RECORD = /^[0-9A-Za-z-]+\.json$/;

/** The records in a state dir, read as the agent reads them (for tools and tests). */
export function readLedger(stateDir: string): SliverRecord[] {
  const dir = join(stateDir, LEDGER_DIR);
  if (!existsSync(dir)) {
    const old = join(stateDir, OLD_FILE);
    return existsSync(old) ? (JSON.parse(readFileSync(old, 'utf8')) as SliverRecord[]) : [];
  }
  const out: SliverRecord[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (RECORD.test(name)) out.push(JSON.parse(readFileSync(join(dir, name), 'utf8')) as SliverRecord);
  }
  return out;
}

export class Ledger {
  readonly #dir: string;
  #slivers = new Map<string, SliverRecord>();
  /** Host ids of the slivers (subids.ts); default: the agent's own layout from IDMAP_FIRST. */
  #ids: SliverIdRange | null = null;
  /** Records whose write is put off (markDone): written with their next change, or within a second. */
  readonly #dirty = new Set<string>();
  #later: NodeJS.Timeout | null = null;

  constructor(stateDir: string) {
    this.#dir = join(stateDir, LEDGER_DIR);
    const old = join(stateDir, OLD_FILE);
    if (!existsSync(this.#dir)) {
      // First start of this version (or of a node): the folder appears whole, then the old file goes.
      const tmp = `${this.#dir}.tmp-${process.pid}`;
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { mode: 0o700 });
      if (existsSync(old)) for (const r of JSON.parse(readFileSync(old, 'utf8')) as SliverRecord[]) atomicWrite(join(tmp, `${r.id}.json`), JSON.stringify(r) + '\n', 0o600);
      renameSync(tmp, this.#dir);
    }
    if (existsSync(old)) unlinkSync(old);
    // A move a crash cut short (another pid's folder, never renamed): the old file was left, and
    // was moved in again above.
    const leftover = `${LEDGER_DIR}.tmp-`;
    for (const name of readdirSync(stateDir)) if (name.startsWith(leftover)) rmSync(join(stateDir, name), { recursive: true, force: true });
    for (const name of readdirSync(this.#dir)) {
      // A write a crash interrupted leaves NAME.json.tmp-PID beside the record (old or none).
      if (!RECORD.test(name)) rmSync(join(this.#dir, name), { force: true });
    }
    for (const r of readLedger(stateDir)) this.#slivers.set(r.id, r);
  }

  /** Slivers made from now on take their ids (and at most range.slots slots) from this range. */
  useIdRange(range: SliverIdRange): void {
    this.#ids = range;
  }

  get(id: string): SliverRecord | undefined {
    return this.#slivers.get(id);
  }

  /** Every record, spares included (they hold slots and uid ranges too). */
  all(): SliverRecord[] {
    return [...this.#slivers.values()];
  }

  /** The slivers: every record but the warm pool's spares. */
  slivers(): SliverRecord[] {
    return this.all().filter((r) => !r.spare);
  }

  /** The warm pool's spares. */
  spares(): SliverRecord[] {
    return this.all().filter((r) => r.spare);
  }

  /** The sliver's record, allocating the lowest free slot (and its uid range) if it has none. */
  claim(id: string, slice: string, maxSlots: number, kind: 'lxc' | 'kvm' = 'lxc', spare?: { image_sha256: string }): SliverRecord {
    const have = this.#slivers.get(id);
    if (have) return have;
    // The id names its record's file (the document's ids are uuids, checked in screen.ts).
    if (!/^[0-9A-Za-z-]+$/.test(id)) throw new Error(`sliver id ${JSON.stringify(id)} cannot name a ledger record`);
    const used = new Set(this.all().map((r) => r.slot));
    let slot = 0;
    while (used.has(slot)) slot++;
    if (slot >= maxSlots) throw new Error(`the sliver subnet has no free /30 left (${maxSlots} slots)`);
    if (this.#ids && slot >= this.#ids.slots) throw new Error(`root's subordinate id range holds no more slivers (${this.#ids.slots}; /etc/subuid, /etc/subgid)`);
    const base = this.#ids ? idmapBase(this.#ids, slot) : IDMAP_FIRST + slot * IDMAP_SIZE;
    const rec: SliverRecord = { id, slice, slot, idmap_base: base, image_sha256: spare?.image_sha256 ?? null, restart_seq: 0, reset_seq: 0, keys_hash: null, kind, ...(spare ? { spare: true as const } : {}) };
    this.#slivers.set(id, rec);
    this.#save(id);
    return rec;
  }

  update(id: string, patch: Partial<SliverRecord>): void {
    const r = this.#slivers.get(id);
    if (!r) return;
    this.#slivers.set(id, { ...r, ...patch });
    this.#save(id);
  }

  /** A spare handed out: from now on a sliver of this slice. */
  adopt(id: string, slice: string): void {
    const r = this.#slivers.get(id);
    if (!r?.spare) return;
    const { spare: _, ...rest } = r;
    this.#slivers.set(id, { ...rest, slice });
    this.#save(id);
  }

  release(id: string): void {
    if (!this.#slivers.delete(id)) return;
    this.#dirty.delete(id);
    rmSync(this.#file(id), { force: true });
  }

  /** Remembers that the sliver's document `key` was carried out in full (null: it no longer is).
   * Written with the record's next change or within a second, not at once: a burst of builds
   * then costs one write per record, and a mark lost to a crash costs only a re-check (the
   * restarted agent then works on that sliver once). */
  markDone(id: string, key: string | null): void {
    const r = this.#slivers.get(id);
    if (!r || (r.done ?? null) === key) return;
    const { done: _, ...rest } = r;
    this.#slivers.set(id, key === null ? rest : { ...rest, done: key });
    this.#dirty.add(id);
    this.#later ??= setTimeout(() => this.flush(), 1000).unref();
  }

  /** Writes the records markDone put off, now (and at the agent's stop). */
  flush(): void {
    if (this.#later) clearTimeout(this.#later);
    this.#later = null;
    for (const id of this.#dirty) {
      try {
        this.#save(id);
      } catch {
        // Not written (the state folder gone, a full disk): the mark costs a re-check after a restart.
      }
    }
  }

  #file(id: string): string {
    return join(this.#dir, `${id}.json`);
  }

  #save(id: string): void {
    this.#dirty.delete(id);
    const r = this.#slivers.get(id);
    if (r) atomicWrite(this.#file(id), JSON.stringify(r) + '\n', 0o600);
  }
}
