// The node agent's storage: images and sliver root filesystems behind one small interface.
import { BtrfsDriver } from './btrfs/driver.js';
import type { StorageDriver, StorageOptions } from './driver.js';

export type { RootOptions, StorageCapabilities, StorageDriver, StorageLog, StorageOptions } from './driver.js';
export { StorageError, isNoSpace, isStorageError, poolFullOr, type StorageErrorCode } from './errors.js';
export { isSha256, isSliverId } from './ids.js';
export { BtrfsDriver } from './btrfs/driver.js';

/** Storage drivers by name; callers pick one from settings and then test its capabilities. */
export const drivers: Record<string, (opts: StorageOptions) => StorageDriver> = {
  btrfs: (opts) => new BtrfsDriver(opts),
};
