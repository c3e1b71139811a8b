// The agent's own record of the slivers it built: which /30 slot and uid range each holds, which
// image it was made from, and which restart/reset it has carried out. Written before the host is
// touched, so a restarted agent finds every sliver it may have half-built.
import { readFileSync, existsSync } from 'node:fs';
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

export class Ledger {
  readonly #file: string;
  #slivers = new Map<string, SliverRecord>();
  /** Host ids of the slivers (subids.ts); default: the agent's own layout from IDMAP_FIRST. */
  #ids: SliverIdRange | null = null;
  /** A save put off (markDone): written with the next save, or within a second. */
  #later: NodeJS.Timeout | null = null;

  constructor(stateDir: string) {
    this.#file = join(stateDir, 'slivers.json');
    if (existsSync(this.#file)) {
      for (const r of JSON.parse(readFileSync(this.#file, 'utf8')) as SliverRecord[]) this.#slivers.set(r.id, r);
    }
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
    const used = new Set(this.all().map((r) => r.slot));
    let slot = 0;
    while (used.has(slot)) slot++;
    if (slot >= maxSlots) throw new Error(`the sliver subnet has no free /30 left (${maxSlots} slots)`);
    if (this.#ids && slot >= this.#ids.slots) throw new Error(`root's subordinate id range holds no more slivers (${this.#ids.slots}; /etc/subuid, /etc/subgid)`);
    const base = this.#ids ? idmapBase(this.#ids, slot) : IDMAP_FIRST + slot * IDMAP_SIZE;
    const rec: SliverRecord = { id, slice, slot, idmap_base: base, image_sha256: spare?.image_sha256 ?? null, restart_seq: 0, reset_seq: 0, keys_hash: null, kind, ...(spare ? { spare: true as const } : {}) };
    this.#slivers.set(id, rec);
    this.#save();
    return rec;
  }

  update(id: string, patch: Partial<SliverRecord>): void {
    const r = this.#slivers.get(id);
    if (!r) return;
    this.#slivers.set(id, { ...r, ...patch });
    this.#save();
  }

  /** A spare handed out: from now on a sliver of this slice. */
  adopt(id: string, slice: string): void {
    const r = this.#slivers.get(id);
    if (!r?.spare) return;
    const { spare: _, ...rest } = r;
    this.#slivers.set(id, { ...rest, slice });
    this.#save();
  }

  release(id: string): void {
    if (this.#slivers.delete(id)) this.#save();
  }

  /** Remembers that the sliver's document `key` was carried out in full (null: it no longer is).
   * Written with the next save or within a second, not at once: a node of thousands of slivers
   * would rewrite this file after every build, and a mark lost to a crash costs only a re-check
   * (the restarted agent then works on that sliver once). */
  markDone(id: string, key: string | null): void {
    const r = this.#slivers.get(id);
    if (!r || (r.done ?? null) === key) return;
    const { done: _, ...rest } = r;
    this.#slivers.set(id, key === null ? rest : { ...rest, done: key });
    this.#later ??= setTimeout(() => this.flush(), 1000).unref();
  }

  /** Writes a save put off by markDone now (the agent's stop). */
  flush(): void {
    if (!this.#later) return;
    try {
      this.#save();
    } catch {
      // Not written (the state folder gone, a full disk): the marks cost a re-check after a restart.
    }
  }

  #save(): void {
    if (this.#later) clearTimeout(this.#later);
    this.#later = null;
    atomicWrite(this.#file, JSON.stringify(this.all(), null, 1) + '\n', 0o600);
  }
}
