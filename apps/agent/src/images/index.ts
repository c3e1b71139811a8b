// A node's images in one place, in the order an image lives through them: a pass wants it (want)
// → the fetcher brings its archive over BitTorrent or HTTP (fetch.ts) → its sha256 is checked
// against the published one (verify) → the storage pool takes it as a read-only base (import) →
// the image index names it (records.ts) → the node seeds it to other nodes (seed) → once no
// sliver uses it and the grace period passed, it goes (gc.ts). `planetlite-agent image import`
// enters the same path at import (import.ts).
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '@planetlite/core';
import type { NodeImage } from '@planetlite/api';
import type { StorageDriver } from '@planetlite/storage';
import { ImageFetcher, type FetchTarget } from './fetch.js';
import { ImageCollector, type ImageCollectorOptions } from './gc.js';
import { ImageIndex } from './records.js';
import { withStateLock } from '../state.js';

export { ImageIndex, sha256File, type ImageRecord } from './records.js';
export type { FetchTarget } from './fetch.js';

export interface NodeImagesOptions {
  stateDir: string;
  storage: StorageDriver;
  log: Logger;
  /** Upload cap for seeding to other nodes, kbit/s; null: none. */
  uploadKbps: number | null;
  /** The registry's pinned CA (its tracker and web seed are trusted with it alone). */
  registryCa: string | null;
  /** What the desired state and the slivers here use (GC keeps those); null while not known. */
  inUse: ImageCollectorOptions['inUse'];
  /** How long an unused image stays. */
  graceMs: number;
  /** An image became ready (fetched, verified, imported, indexed) or its fetch failed. */
  onChange: (image: string, state: 'ready' | 'failed', detail: Record<string, unknown>) => void;
}

export class NodeImages {
  readonly index: ImageIndex;
  readonly #o: NodeImagesOptions;
  readonly #fetcher: ImageFetcher;
  readonly #collector: ImageCollector;

  constructor(o: NodeImagesOptions) {
    this.#o = o;
    this.index = new ImageIndex(o.stateDir);
    const log = o.log;
    this.#fetcher = new ImageFetcher({
      dir: join(o.stateDir, 'images'),
      log,
      uploadKbps: o.uploadKbps,
      registryCa: o.registryCa,
      onReady: (target, file) => this.#import(target, file),
      onChange: (image, state, detail) => {
        if (state === 'ready' || state === 'failed') o.onChange(image, state, detail);
      },
    });
    this.#collector = new ImageCollector({ stateDir: o.stateDir, images: this.index, storage: o.storage, archives: this.#fetcher, inUse: o.inUse, graceMs: o.graceMs, log });
  }

  /** Starts fetching an image a sliver needs, unless it is under way or here. */
  want(target: FetchTarget): void {
    this.#fetcher.want(target);
  }

  /** An image's fetch, or undefined when it was never asked for. */
  state(name: string): ReturnType<ImageFetcher['state']> {
    return this.#fetcher.state(name);
  }

  /** Seeds an image this node already imported, from the archive it kept. */
  seed(target: FetchTarget): void {
    this.#fetcher.seed(target);
  }

  /** Every image's fetch and byte sources, for the observed state. */
  report(): NodeImage[] {
    return this.#fetcher.report();
  }

  /** One round of garbage collection; the names of the images removed. */
  collect(): Promise<string[]> {
    return this.#collector.collect();
  }

  close(): Promise<void> {
    return this.#fetcher.close();
  }

  /** A verified archive into the pool, then into the index (a crash in between: the next fetch imports again). */
  async #import(target: FetchTarget, file: string): Promise<void> {
    await this.#o.storage.importImage(target.sha256, file);
    const { size } = await stat(file);
    await withStateLock(this.#o.stateDir, 'image fetch', async () => this.index.put({ name: target.name, sha256: target.sha256, size, imported_at: new Date().toISOString() }));
  }
}
