// The warm pool: spare slivers of one image, built and started ahead (root, link, container,
// sshd up) under ids the agent chose, with no slice in them. Each report lists them; the registry
// gives a new sliver of a slice with that image and kind the id of one, and the pass that sees it
// hands the spare out (planner.ts: 'adopt'): the slice's user, keys, /etc/slicename, hostname,
// limits and ports are applied to the running container instead of building one. A spare is
// never used twice, so no slice's data can reach another slice; the pool is refilled in the
// background after every pass.
import { randomUUID } from 'node:crypto';
import type { DesiredSliver, NodeSpare } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import { errorFields } from '@planetlite/host';
import type { StorageDriver } from '@planetlite/storage';
import type { Builder } from './builder.js';
import type { ImageIndex } from './images/records.js';
import type { Ledger } from './ledger.js';

export interface WarmPoolSettings {
  /** The image spares are made of (by name, as slices name it); null: no pool. */
  image: string | null;
  /** How many spares the node keeps. */
  size: number;
}

/** What a spare runs with until it is handed out (the registry's default slice resources): the
 * slice's own are applied at hand-out. */
const SPARE_RESOURCES: DesiredSliver['resources'] = { memory_mb: 512, cpu_shares: 1024, disk_mb: 2048, net_kbps: 10_000, cpu_cap_percent: null };

export class WarmPool {
  readonly #settings: WarmPoolSettings;
  readonly #builder: Builder;
  readonly #ledger: Ledger;
  readonly #images: ImageIndex;
  readonly #storage: StorageDriver;
  readonly #log: Logger;
  /** Runs a job in a sliver's queue (reconcile.ts): a spare's build or removal never overlaps
   * its hand-out. */
  readonly #enqueue: (id: string, job: () => Promise<void>) => Promise<void>;
  /** Ids of the spares that are up: built by this process, or found running at its first fill. */
  readonly #ready = new Set<string>();
  #checked = false;
  #filling: Promise<void> | null = null;
  #again = false;
  #closed = false;
  /** Told when the spares on offer change (the agent reports them). */
  onChange: () => void = () => undefined;

  get image(): string | null {
    return this.#settings.size > 0 ? this.#settings.image : null;
  }

  constructor(opts: {
    settings: WarmPoolSettings;
    builder: Builder;
    ledger: Ledger;
    images: ImageIndex;
    storage: StorageDriver;
    log: Logger;
    enqueue: (id: string, job: () => Promise<void>) => Promise<void>;
  }) {
    this.#settings = opts.settings;
    this.#builder = opts.builder;
    this.#ledger = opts.ledger;
    this.#images = opts.images;
    this.#storage = opts.storage;
    this.#log = opts.log;
    this.#enqueue = opts.enqueue;
  }

  /** The spares on offer, for the report: up, and not handed out. */
  spares(): NodeSpare[] {
    return this.#ledger
      .spares()
      .filter((r) => this.#ready.has(r.id) && r.image_sha256)
      .map((r) => ({ id: r.id, image: this.#settings.image!, image_sha256: r.image_sha256!, kind: r.kind ?? 'lxc' }));
  }

  /** Brings the pool to its size (and rids it of spares of another image, or beyond the size);
   * one fill at a time, and one more after it when asked meanwhile. */
  fill(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#filling) {
      this.#again = true;
      return this.#filling;
    }
    this.#filling = (async () => {
      do {
        this.#again = false;
        await this.#fill().catch((err: unknown) => this.#log.warn(errorFields(err), 'filling the warm pool failed; tried again after the next pass'));
      } while (this.#again && !this.#closed);
    })().finally(() => {
      this.#filling = null;
    });
    return this.#filling;
  }

  async #fill(): Promise<void> {
    const { image, size } = this.#settings;
    // No pool and no spare left from an earlier one: nothing to look at.
    if (!this.image && this.#ledger.spares().length === 0) return;
    const local = image ? this.#images.byName(image) : undefined;
    // Spares are made only of an image this node has: imported, or fetched for a sliver.
    const sha256 = local && (await this.#storage.hasImage(local.sha256)) ? local.sha256 : null;
    if (!this.#checked) {
      // Spares an earlier run left: kept when up; one a crash left half-built goes.
      const states = await this.#builder.states();
      for (const r of this.#ledger.spares()) if (states.get(r.id)?.state === 'running') this.#ready.add(r.id);
      this.#checked = true;
    }
    const spares = this.#ledger.spares();
    // Handed out since: slivers now.
    for (const id of this.#ready) if (!this.#ledger.get(id)?.spare) this.#ready.delete(id);
    const keep = spares.filter((r) => r.image_sha256 === sha256 && this.#ready.has(r.id)).slice(0, sha256 ? size : 0);
    for (const r of spares) if (!keep.includes(r)) await this.#remove(r.id);
    let made = 0;
    while (sha256 && this.#ledger.spares().length < size && !this.#closed) {
      const id = randomUUID();
      let failed: unknown = null;
      await this.#enqueue(id, () => this.#builder.buildSpare(id, sha256, SPARE_RESOURCES).catch((err: unknown) => void (failed = err)));
      if (failed) throw failed;
      this.#ready.add(id);
      made++;
      this.onChange();
    }
    if (made) this.#log.info({ image, made, spares: this.#ledger.spares().length }, 'warm pool filled');
  }

  /** Stops filling (the agent stops): resolves once the spare under way is built or undone. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#filling;
  }

  /** A spare removed whole, unless it was handed out meanwhile. */
  async #remove(id: string): Promise<void> {
    this.#ready.delete(id);
    this.onChange();
    await this.#enqueue(id, async () => {
      if (!this.#ledger.get(id)?.spare) return;
      try {
        await this.#builder.teardown(id, 'lxc', ['destroy', 'unlink', 'delete root', 'release']);
        this.#log.info({ spare: id }, 'warm-pool spare removed');
      } catch (err) {
        this.#log.warn({ spare: id, ...errorFields(err) }, 'removing a warm-pool spare failed; the next fill retries');
      }
    });
  }
}
