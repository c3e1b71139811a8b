// Slice and sliver rules shared by routes and the scheduled sweeps.
import type { Queryable } from '@planetlite/db';
import { AppError } from '@planetlite/core';
import type * as S from '@planetlite/api';
import { dropSliceIfEmpty, findSlice, markSliceDeleting, sliceMembers, type SliceRecord } from '../repositories/slices.js';
import { findSliver, firstFreePort, markSliceSliversDeleting } from '../repositories/slivers.js';
import { imageTraits } from '../repositories/images.js';
import type { Changes } from './changes.js';

export const siteOfSlice = (name: string): string => name.slice(0, name.indexOf('_'));

export async function loadSlice(q: Queryable, name: string, lock = false): Promise<SliceRecord> {
  const slice = await findSlice(q, name, lock);
  if (!slice) throw new AppError('not_found', `slice ${name} not found`);
  return slice;
}

export async function loadSliver(q: Queryable, id: string): Promise<S.Sliver> {
  const sliver = await findSliver(q, id);
  if (!sliver) throw new AppError('not_found', `sliver ${id} not found`);
  return sliver;
}

export async function sliceView(q: Queryable, slice: SliceRecord): Promise<S.Slice> {
  return { ...slice, members: await sliceMembers(q, slice.name) };
}

/**
 * Marks a slice deleting and every sliver of it for teardown. A slice without slivers goes at once;
 * otherwise the last sliver the agents confirm gone takes the slice with it.
 */
export async function tearDownSlice(q: Queryable, changes: Changes, name: string, reason: 'deleted' | 'expired'): Promise<void> {
  await markSliceDeleting(q, name);
  const rows = await markSliceSliversDeleting(q, name);
  for (const s of rows) {
    changes.touch(s.node_id);
    await changes.record(q, { type: 'sliver.state', slice: name, node: s.node_id, sliver: s.id, data: { state: 'deleting', reason: `slice ${reason}` } });
  }
  await changes.record(q, { type: reason === 'expired' ? 'slice.expired' : 'slice.deleted', slice: name, data: { slivers: rows.length } });
  await dropSliceIfEmpty(q, name);
}

/**
 * First free run of `count` ports in the node's window. Callers hold the node row lock
 * (SELECT … FOR NO KEY UPDATE), so concurrent allocations on one node are serialised.
 */
export async function allocatePorts(q: Queryable, nodeId: string, window: S.PortRange, count: number): Promise<S.PortRange> {
  const first = await firstFreePort(q, nodeId, window, count);
  if (first === null) {
    throw new AppError('port_window_exhausted', `node ${nodeId} has no ${count} free ports left in its window ${window.first}-${window.last}`);
  }
  return { first, last: first + count - 1 };
}

/**
 * Refuses a slice of this kind on a published image that does not serve it (its manifest's
 * kinds). An image the registry has not published may still be on nodes (`planetlite-agent
 * image import`): nothing to check then. Returns the image's architecture and archive sha256, when published.
 */
export async function requireImageServes(q: Queryable, image: string, kind: S.Slice['kind']): Promise<{ arch: string; sha256: string } | null> {
  const img = await imageTraits(q, image);
  if (!img) return null;
  if (!img.kinds.includes(kind)) throw imageIncompatible(image, img.kinds, kind);
  return { arch: img.arch, sha256: img.sha256 };
}

export const imageIncompatible = (image: string, kinds: S.Image['kinds'], kind: S.Slice['kind']): AppError =>
  new AppError('image_incompatible', `image ${image} serves ${kinds.join(' and ')} slivers, not ${kind}; choose an image whose kinds include ${kind} (planetlite image ls)`);
