// The btrfs pool's lifecycle: a sparse loop file (or a block device) formatted, mounted at the
// top-level subvolume, quotas on, and leftovers of interrupted work removed.
import { mkdir, open as openFile, realpath, rm, rmdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { CommandError, Reverter, run } from '@planetlite/host';
import type { StorageLog, StorageOptions } from '../driver.js';
import { StorageError } from '../errors.js';
import {
  attachLoop,
  clearStaleQgroups,
  detachLoop,
  enableQuotas,
  loopDevicesOf,
  mountAt,
  quotasEnabled,
  requireKernel,
  requireTools,
  signatureOf,
  type MountInfo,
} from './utils.js';
import { IMAGES, SLIVERS, sweepLeftovers } from './volumes.js';

const SIZE = /^[1-9]\d*[KMGTP]?$/;
export const DEFAULT_LOOP_SIZE = '4G';

export class BtrfsPool {
  /** The loop file or block device, as an absolute path. */
  readonly source: string;
  readonly isLoop: boolean;
  readonly size: string;
  /** Where the pool is mounted, as an absolute path. */
  readonly mountpoint: string;
  readonly #log: StorageLog | undefined;
  #checked = false;

  constructor(opts: StorageOptions) {
    if (!opts.pool || !opts.mountpoint) throw new StorageError('invalid_options', 'btrfs storage needs a pool (loop file or /dev/… device) and a mountpoint');
    this.source = resolve(opts.pool);
    this.isLoop = !this.source.startsWith('/dev/');
    this.size = opts.size ?? DEFAULT_LOOP_SIZE;
    if (!SIZE.test(this.size)) throw new StorageError('invalid_options', `pool size must look like 512M or 4G, not ${JSON.stringify(this.size)}`);
    this.mountpoint = resolve(opts.mountpoint);
    if (this.mountpoint === '/') throw new StorageError('invalid_options', 'the pool cannot be mounted at /');
    this.#log = opts.log;
  }

  async open(): Promise<void> {
    await this.#checkHost();
    await mkdir(this.mountpoint, { recursive: true });
    const mounted = await mountAt(await realpath(this.mountpoint));
    if (mounted) {
      await this.#checkOurs(mounted);
      await this.#prepare();
      return;
    }
    await Reverter.wrap(async (r) => {
      const device = this.isLoop ? await this.#attachLoopFile(r) : this.source;
      await this.#format(device);
      await run('mount', ['-t', 'btrfs', '-o', 'subvolid=5', device, this.mountpoint]);
      r.add(() => run('umount', [this.mountpoint]));
      this.#log?.info({ pool: this.source, device, mountpoint: this.mountpoint }, 'storage pool mounted');
      await this.#prepare();
    });
  }

  async close(): Promise<void> {
    const mounted = await mountAt(await realpath(this.mountpoint).catch(() => this.mountpoint));
    if (mounted) {
      await this.#checkOurs(mounted);
      try {
        await run('umount', [this.mountpoint]);
      } catch (err) {
        if (err instanceof CommandError && /busy/i.test(err.stderr)) {
          throw new StorageError('pool_busy', `cannot unmount the storage pool at ${this.mountpoint}: it is busy (a sliver still running, or a shell inside it?)`, { cause: err });
        }
        throw err;
      }
      this.#log?.info({ pool: this.source, mountpoint: this.mountpoint }, 'storage pool unmounted');
    }
    if (this.isLoop) {
      for (const device of await loopDevicesOf(this.source)) await detachLoop(device);
      // A loop device that something still holds open (another process probing block devices,
      // btrfs finishing its release after umount) is only marked to clear itself when the last
      // holder lets go; close() resolves once it is really gone, or after 10 s.
      for (let i = 0; i < 100 && (await loopDevicesOf(this.source)).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    }
  }

  async destroy(): Promise<void> {
    await this.close();
    if (this.isLoop) await rm(this.source, { force: true });
    // The mountpoint goes too when it is an empty folder; anything else there is not ours.
    await rmdir(this.mountpoint).catch(() => undefined);
  }

  /** Tools and kernel features, checked once per driver. */
  async #checkHost(): Promise<void> {
    if (this.#checked) return;
    const tools = ['btrfs', 'mkfs.btrfs', 'blkid', 'findmnt', 'mount', 'umount', 'tar'];
    if (this.isLoop) tools.push('losetup', 'truncate');
    await requireTools(tools, 'the btrfs storage driver');
    await requireKernel(this.isLoop);
    this.#checked = true;
  }

  /** The mount at our mountpoint must be this pool's top-level subvolume. */
  async #checkOurs(m: MountInfo): Promise<void> {
    const ours = this.isLoop
      ? (await loopDevicesOf(this.source)).includes(m.source)
      : (await realpath(m.source).catch(() => m.source)) === (await realpath(this.source).catch(() => this.source));
    if (m.fstype !== 'btrfs' || !ours || m.fsroot !== '/') {
      throw new StorageError(
        'pool_mismatch',
        `${this.mountpoint} already has ${m.fstype} from ${m.source} (subvolume ${m.fsroot}) mounted, not the top of the btrfs pool ${this.source}`,
      );
    }
  }

  /** Creates the sparse loop file if needed and attaches it; registers the undo of both. */
  async #attachLoopFile(r: Reverter): Promise<string> {
    const existing = await loopDevicesOf(this.source);
    if (!existing.length) {
      await mkdir(dirname(this.source), { recursive: true });
      try {
        // 'x': create only if missing, so an existing pool is never truncated.
        await (await openFile(this.source, 'wx')).close();
        r.add(() => rm(this.source, { force: true }));
        await run('truncate', ['--size', this.size, this.source]);
        this.#log?.info({ pool: this.source, size: this.size }, 'storage pool file created');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    const device = await attachLoop(this.source);
    if (!existing.includes(device)) r.add(() => detachLoop(device));
    return device;
  }

  /** Formats a blank device (or loop file); a btrfs one is kept; anything else is refused. */
  async #format(device: string): Promise<void> {
    const sig = await signatureOf(device);
    if (sig === 'btrfs') return;
    if (sig !== null) {
      throw new StorageError('pool_mismatch', `${this.source} holds ${sig === 'partition-table' ? 'a partition table' : `a ${sig} filesystem`}; refusing to format it as the btrfs pool`);
    }
    // No -f: mkfs.btrfs itself refuses a device with any signature blkid missed.
    await run('mkfs.btrfs', ['--quiet', '--label', 'planetlite', device]);
    this.#log?.info({ pool: this.source, device }, 'storage pool formatted');
  }

  /** Quotas on, the top folders present, leftovers of processes that died mid-work gone. */
  async #prepare(): Promise<void> {
    if (!(await quotasEnabled(this.mountpoint))) await enableQuotas(this.mountpoint);
    await mkdir(join(this.mountpoint, IMAGES), { recursive: true });
    await mkdir(join(this.mountpoint, SLIVERS), { recursive: true });
    for (const path of await sweepLeftovers(this.mountpoint)) {
      this.#log?.warn({ path }, 'removed leftover of interrupted storage work');
    }
    await clearStaleQgroups(this.mountpoint);
  }
}
