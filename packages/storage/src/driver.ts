// The storage driver interface: how the node agent keeps images and sliver root filesystems.

/** What a driver can do; callers test these flags, never the driver's name. */
export interface StorageCapabilities {
  /** Sliver roots are copy-on-write snapshots of the image (cheap to create, share bytes). */
  snapshots: boolean;
  /** createRoot's quotaBytes is enforced: writes past it fail with EDQUOT. */
  quotas: boolean;
  /** createRoot can make layered roots (an overlay over the image idmapped to the sliver's ids):
   * slivers of one image share its page cache. Known after open(). */
  layers: boolean;
}

/** How createRoot makes a new root. */
export interface RootOptions {
  /** Layered (when capabilities.layers): files the sliver sees as uid/gid n are host ids
   * idmapBase + n, on disk as in every process. Else a snapshot whose files keep the ids the
   * sliver sees, for an instance driver that maps them itself (LXC's idmap=container). */
  layered?: { idmapBase: number } | null;
  /** Filled with the time of each part of making the root, ms (for the build's log). */
  took?: Record<string, number>;
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
  /** Offer layered roots where the host can mount them (python3 and overlayfs); default true. */
  layers?: boolean | undefined;
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
   * A writable root of the image for one sliver (a snapshot, or layered: RootOptions) whose
   * exclusive bytes (what the sliver adds) are limited to quotaBytes. Idempotent: an existing
   * root keeps its kind and contents, gets its limit set to quotaBytes (so this call also
   * resizes) and is mounted if layered. Returns the root filesystem's path.
   */
  createRoot(sliverId: string, imageSha256: string, quotaBytes: number, opts?: RootOptions): Promise<string>;
  /** The root filesystem's path (of a layered root: where its overlay is mounted). */
  rootPath(sliverId: string): string;
  /** How far the ids on disk of a root's files are from the ids its sliver sees: the idmap base
   * of a layered root, 0 for a snapshot; null when there is no root. */
  rootIdShift(sliverId: string): Promise<number | null>;
  /** Ids of the slivers that have a root. */
  listRoots(): Promise<string[]>;
  /** Whether this sliver has a root (one stat: no listing of the pool). */
  hasRoot(sliverId: string): Promise<boolean>;
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
