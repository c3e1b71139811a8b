// The storage driver's one error type, with a stable code the agent can act on.
import { DriverError } from '@planetlite/host';

export type StorageErrorCode =
  | 'invalid_id'
  | 'invalid_options'
  | 'missing_tool'
  | 'missing_kernel_feature'
  | 'pool_not_open'
  | 'pool_mismatch'
  | 'pool_busy'
  | 'image_checksum_mismatch'
  | 'image_not_found'
  | 'image_in_use'
  | 'archive_unreadable'
  /** The archive holds a member that may not be extracted as root (outside the tree, a device, …). */
  | 'archive_unsafe'
  | 'ambiguous_subvolumes'
  /** btrfs printed something this driver cannot read (a btrfs-progs it does not know). */
  | 'unexpected_output'
  | 'quota_missing'
  /** The pool has no space left (ENOSPC): nothing was made; the same call works once space returns. */
  | 'pool_full'
  /** A sliver's root is at its quota (EDQUOT): a write into it waits until the sliver frees space. */
  | 'sliver_disk_full';

export class StorageError extends DriverError<StorageErrorCode> {
  override name = 'StorageError';
}

export function isStorageError(err: unknown, code?: StorageErrorCode): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code);
}

/** Whether a failure is the filesystem's "no space left on device" (an fs call's ENOSPC, or a
 * host command such as tar or btrfs that printed it). */
export function isNoSpace(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return true;
  const stderr = (err as { stderr?: unknown }).stderr;
  return /No space left on device/i.test(`${err.message}\n${typeof stderr === 'string' ? stderr : ''}`);
}

/** A no-space failure as the pool's StorageError 'pool_full' (what was being done, where);
 * any other error as it is. */
export function poolFullOr(err: unknown, mountpoint: string, doing: string): unknown {
  if (!isNoSpace(err) || isStorageError(err, 'pool_full')) return err;
  return new StorageError('pool_full', `the storage pool at ${mountpoint} is full (no space left on device) while ${doing}; free space in it or grow it`, { cause: err });
}
