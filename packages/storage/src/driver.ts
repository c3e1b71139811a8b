// The storage driver interface: how the node agent keeps images and sliver root filesystems.

/** What a driver can do; callers test these flags, never the driver's name. */
export interface StorageCapabilities {
  /** Sliver roots are copy-on-write snapshots of the image (cheap to create, share bytes). */
  snapshots: boolean;
  /** createRoot's quotaBytes is enforced: writes past it fail with EDQUOT. */
  quotas: boolean;
}

/** Where a driver keeps its pool; the same shape for every driver in the registry. */
export interface StorageOptions {
  /** A loop file path (created sparse on first open) or a /dev/… block device. */
  pool: string;
  /** Size of a new loop file, as truncate(1) takes it ('4G'); ignored for block devices. */
  size?: string | undefined;
  /** Where the pool is mounted (created if missing). */
  mountpoint: string;
  /** Optional pino-style logger (a child logger for this component). */
  log?: StorageLog | undefined;
}

/** The part of a pino logger the driver uses: constant messages, variables in fields. */
export interface StorageLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

export interface StorageDriver {
  readonly name: string;
  readonly capabilities: StorageCapabilities;
  /**
   * Make the pool ready: create, format and mount a sparse loop file (or format a blank /
   * mount a btrfs block device; any other filesystem is refused, never wiped). Idempotent;
   * enables quotas; removes leftovers of interrupted work (*.partial subvolumes, stale qgroups).
   */
  open(): Promise<void>;
  /** Unmount the pool and detach its loop device; idempotent. */
  close(): Promise<void>;
  /** close(), then delete the loop file (a block device is left as it is). For tests and uninstall. */
  destroy(): Promise<void>;
  hasImage(sha256: string): Promise<boolean>;
  /**
   * Import a root filesystem tar archive (plain, .gz, .xz or .zst) as the read-only base for
   * this sha256. Checks the archive's sha256 first and refuses a mismatch. Crash-safe: extracts
   * into a temporary subvolume, makes it read-only, then renames it into place. Idempotent.
   */
  importImage(sha256: string, archive: string): Promise<void>;
  listImages(): Promise<string[]>;
  /** Idempotent. Refuses (StorageError 'image_in_use') while a sliver root made from it exists. */
  deleteImage(sha256: string): Promise<void>;
  /**
   * A writable snapshot of the image for one sliver whose exclusive bytes (what the sliver adds)
   * are limited to quotaBytes. Idempotent: an existing root keeps its contents and gets its
   * limit set to quotaBytes (so this call also resizes). Returns the root's path.
   */
  createRoot(sliverId: string, imageSha256: string, quotaBytes: number): Promise<string>;
  rootPath(sliverId: string): string;
  /** Ids of the slivers that have a root. */
  listRoots(): Promise<string[]>;
  /**
   * Delete a sliver's root with every subvolume nested in it, and their qgroups. Idempotent.
   * Stop the sliver first: a running sliver could race the deletion.
   */
  deleteRoot(sliverId: string): Promise<void>;
  /** Bytes the sliver's root uses (exclusive = what it added), or null when it has no root. */
  usage(sliverId: string): Promise<{ exclusiveBytes: number; referencedBytes: number } | null>;
  /** usage() of every root at once, in about one command (accounting reads all of them). */
  usageAll(): Promise<Map<string, { exclusiveBytes: number; referencedBytes: number }>>;
}
