// The btrfs storage driver: a pool of read-only image subvolumes and per-sliver writable
// snapshots with exclusive-bytes quotas. Validates names, serialises work per image and per
// root, and leaves the host work to pool.ts (lifecycle) and volumes.ts (images and roots).
import type { RootOptions, StorageCapabilities, StorageDriver, StorageLog, StorageOptions } from '../driver.js';
import { StorageError, poolFullOr } from '../errors.js';
import { sha256Digest, sliverId } from '../ids.js';
import { BtrfsPool } from './pool.js';
import { join } from 'node:path';
import { layersMissing, readLayers } from './layers.js';
import { isSubvolume, KeyedLock } from './utils.js';
import * as volumes from './volumes.js';

export class BtrfsDriver implements StorageDriver {
  readonly name = 'btrfs';
  readonly capabilities: StorageCapabilities = { snapshots: true, quotas: true, layers: false };
  readonly #pool: BtrfsPool;
  readonly #wantLayers: boolean;
  readonly #log: StorageLog | undefined;
  readonly #locks = new KeyedLock();
  /** Subvolume id of each root, for usageAll(). */
  readonly #rootIds = new Map<string, number>();
  #open = false;

  constructor(opts: StorageOptions) {
    this.#pool = new BtrfsPool(opts);
    this.#wantLayers = opts.layers ?? true;
    this.#log = opts.log;
  }

  /** Where the pool is mounted. */
  get mountpoint(): string {
    return this.#pool.mountpoint;
  }

  open(): Promise<void> {
    return this.#locks.with('pool', async () => {
      await this.#pool.open();
      this.#open = true;
      const missing = this.#wantLayers ? await layersMissing(join(this.#pool.mountpoint, '.layers-probe')) : null;
      if (missing) this.#log?.warn({ why: missing }, 'new sliver roots are snapshots, not layered: their slivers share no page cache');
      this.capabilities.layers = this.#wantLayers && missing === null;
      // Layered roots are mounts of their own: gone after a reboot, made again here.
      for (const f of await volumes.mountAllLayers(this.#pool.mountpoint)) this.#log?.warn({ sliver: f.sliver, err: f.error }, 'a layered sliver root could not be mounted; tried again when its sliver is built');
    });
  }

  close(): Promise<void> {
    return this.#locks.with('pool', async () => {
      this.#open = false;
      await this.#unmountLayers();
      await this.#pool.close();
    });
  }

  destroy(): Promise<void> {
    return this.#locks.with('pool', async () => {
      this.#open = false;
      await this.#unmountLayers();
      await this.#pool.destroy();
    });
  }

  async #unmountLayers(): Promise<void> {
    await volumes.unmountAllLayers(this.#pool.mountpoint);
  }

  async hasImage(sha256: string): Promise<boolean> {
    return volumes.hasImage(this.#mountpoint(), sha256Digest(sha256));
  }

  /** Path of an image's read-only base (for drivers that read it directly). */
  imagePath(sha256: string): string {
    return volumes.imagePath(this.#pool.mountpoint, sha256Digest(sha256));
  }

  async importImage(sha256: string, archive: string): Promise<void> {
    const sha = sha256Digest(sha256);
    const mp = this.#mountpoint();
    // A full pool is said as such (the partial subvolume is gone already: the import's undo).
    return await this.#locks.with(`image:${sha}`, () => volumes.importImage(mp, sha, archive)).catch((err: unknown) => {
      throw poolFullOr(err, mp, `importing image ${sha}`);
    });
  }

  async listImages(): Promise<string[]> {
    return volumes.listImages(this.#mountpoint());
  }

  async deleteImage(sha256: string): Promise<void> {
    const sha = sha256Digest(sha256);
    const mp = this.#mountpoint();
    return await this.#locks.with(`image:${sha}`, () => volumes.deleteImage(mp, sha));
  }

  async createRoot(sliver: string, imageSha256: string, quotaBytes: number, opts: RootOptions = {}): Promise<string> {
    const id = sliverId(sliver);
    const sha = sha256Digest(imageSha256);
    if (!Number.isSafeInteger(quotaBytes) || quotaBytes <= 0) {
      throw new StorageError('invalid_options', `a sliver's disk quota must be a positive whole number of bytes, not ${quotaBytes}`);
    }
    const layered = opts.layered ?? null;
    if (layered && !this.capabilities.layers) throw new StorageError('invalid_options', 'this pool makes no layered roots (see the warning at open: python3 or overlayfs missing, or turned off)');
    const mp = this.#mountpoint();
    // Root lock, then image lock (never the other way round): the image cannot be deleted
    // between the check that it exists and the snapshot.
    return await this.#locks.with(`root:${id}`, () => this.#locks.with(`image:${sha}`, () => volumes.createRoot(mp, id, sha, quotaBytes, layered, opts.took))).catch((err: unknown) => {
      throw poolFullOr(err, mp, `making the root of sliver ${id}`);
    });
  }

  rootPath(sliver: string): string {
    return volumes.rootfsPath(this.#pool.mountpoint, sliverId(sliver));
  }

  async rootIdShift(sliver: string): Promise<number | null> {
    const sub = volumes.rootPath(this.#mountpoint(), sliverId(sliver));
    const layers = await readLayers(sub).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw err;
    });
    if (layers) return layers.idmapBase;
    return (await isSubvolume(sub)) ? 0 : null;
  }

  async listRoots(): Promise<string[]> {
    return volumes.listRoots(this.#mountpoint());
  }

  hasRoot(sliver: string): Promise<boolean> {
    return isSubvolume(volumes.rootPath(this.#mountpoint(), sliverId(sliver)));
  }

  async deleteRoot(sliver: string): Promise<void> {
    const id = sliverId(sliver);
    const mp = this.#mountpoint();
    this.#rootIds.delete(id);
    return await this.#locks.with(`root:${id}`, () => volumes.deleteRoot(mp, id));
  }

  async usageAll(): Promise<Map<string, { exclusiveBytes: number; referencedBytes: number }>> {
    const mp = this.#mountpoint();
    return volumes.rootsUsage(mp, await volumes.listRoots(mp), this.#rootIds);
  }

  async usage(sliver: string): Promise<{ exclusiveBytes: number; referencedBytes: number } | null> {
    return volumes.usage(this.#mountpoint(), sliverId(sliver));
  }

  /** The mountpoint, once open() has made the pool ready in this process. */
  #mountpoint(): string {
    if (!this.#open) throw new StorageError('pool_not_open', `the btrfs storage pool at ${this.#pool.mountpoint} is not open; call open() first`);
    return this.#pool.mountpoint;
  }
}
