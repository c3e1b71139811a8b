// Failures that end by themselves once the node or the sliver has room again: the node's storage
// pool full (ENOSPC), or a sliver's own disk at its quota (EDQUOT) when the agent writes into it.
// The sliver shows them with their code as its error, and the agent tries again every few
// seconds (not only on the next document) until it succeeds.
import { dirname } from 'node:path';
import { commandErrorOf } from '@planetlite/host';
import { StorageError, isNoSpace, isStorageError, poolFullOr } from '@planetlite/storage';

/** A failure a later pass may get past without any change of the document (space returns). */
export function isTransient(err: unknown): boolean {
  return isStorageError(err, 'pool_full') || isStorageError(err, 'sliver_disk_full');
}

/** The error a sliver shows: the transient ones start with their code (pool_full: …). */
export function sliverError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return isTransient(err) ? `${(err as StorageError).code}: ${message}; retried every few seconds` : message;
}

/** A write into a sliver's root from the host (provisioning): no space is the pool's. */
export function provisionFault(err: unknown, rootfs: string): unknown {
  return poolFullOr(err, dirname(dirname(rootfs)), 'writing /etc/slicename, the keys and the host key into a new sliver root');
}

/** A write from inside the running sliver (its keys): its quota full, or the pool's space gone. */
export function keysFault(err: unknown, diskMb: number, poolOf: string): unknown {
  const text = `${err instanceof Error ? err.message : String(err)}\n${commandErrorOf(err)?.stderr ?? ''}`;
  if (/Disk quota exceeded/i.test(text)) {
    return new StorageError('sliver_disk_full', `the sliver's disk (its quota of ${diskMb} MiB) is full: its new ssh keys could not be written into it; they are once it has room`, { cause: err });
  }
  if (isNoSpace(err)) return poolFullOr(err, dirname(dirname(poolOf)), "writing the sliver's new ssh keys into it");
  return err;
}
