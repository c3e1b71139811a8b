// Image garbage collection: an image no sliver on this node uses, and that no sliver of the
// desired state names, is removed after a grace period: its read-only base subvolume, its index
// record, and the archive the node seeded it from. One a sliver uses is never removed (the
// storage driver refuses too, while a root made from it exists).
import type { StorageDriver } from '@planetlite/storage';
import type { Logger } from '@planetlite/core';
import type { ImageIndex } from './records.js';
import { withStateLock } from '../state.js';

export interface ImageCollectorOptions {
  stateDir: string;
  images: ImageIndex;
  storage: StorageDriver;
  /** Stops seeding an image and deletes its archive; lists the archives kept. */
  archives: { forget(name: string, sha256: string): void; archives(): string[] } | null;
  /** Names and sha256s of the images the desired state asks for, and the sha256s of the images
   * slivers here were made from; null while that is not known (no desired state yet). */
  inUse: () => { names: Set<string>; sha256s: Set<string> } | null;
  graceMs: number;
  log: Logger;
  now?: () => number;
}

export class ImageCollector {
  readonly #o: ImageCollectorOptions;
  /** When each image was first seen unused; forgotten by a restart, which starts its grace anew. */
  readonly #unusedSince = new Map<string, number>();

  constructor(opts: ImageCollectorOptions) {
    this.#o = opts;
  }

  /** One round; resolves with the names of the images removed. */
  async collect(): Promise<string[]> {
    const { images, storage, archives, log } = this.#o;
    const now = (this.#o.now ?? Date.now)();
    const used = this.#o.inUse();
    if (!used) return [];
    const { names, sha256s } = used;
    const removed: string[] = [];
    for (const rec of images.all()) {
      if (names.has(rec.name) || sha256s.has(rec.sha256)) {
        this.#unusedSince.delete(rec.name);
        continue;
      }
      const since = this.#unusedSince.get(rec.name) ?? now;
      this.#unusedSince.set(rec.name, since);
      if (now - since < this.#o.graceMs) continue;
      // Another record may name the same archive (one image imported under two names).
      const shared = images.all().some((r) => r.name !== rec.name && r.sha256 === rec.sha256);
      try {
        if (!shared) await storage.deleteImage(rec.sha256);
      } catch (err) {
        log.info({ image: rec.name, err: err instanceof Error ? err.message : String(err) }, 'unused image kept');
        continue;
      }
      await withStateLock(this.#o.stateDir, 'image gc', async () => images.remove(rec.name));
      if (!shared) archives?.forget(rec.name, rec.sha256);
      this.#unusedSince.delete(rec.name);
      removed.push(rec.name);
      log.info({ image: rec.name, sha256: rec.sha256, unused_seconds: Math.round((now - since) / 1000) }, 'unused image removed');
    }
    // Archives whose image record is gone (a crash between the two steps above).
    const known = new Set(images.all().map((r) => r.sha256));
    for (const sha of archives?.archives() ?? []) {
      if (!known.has(sha) && !sha256s.has(sha)) archives!.forget('', sha);
    }
    return removed;
  }
}
