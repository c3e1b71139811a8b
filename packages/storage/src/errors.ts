// The storage driver's one error type, with a stable code the agent can act on.

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
  | 'quota_missing';

export class StorageError extends Error {
  readonly code: StorageErrorCode;

  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
    this.code = code;
  }
}

export function isStorageError(err: unknown, code?: StorageErrorCode): err is StorageError {
  return err instanceof StorageError && (code === undefined || err.code === code);
}
