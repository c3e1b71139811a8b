// Image garbage collection's policy: what goes, what stays, and when. The storage driver here is
// a recorder (the real btrfs deletion and its refusal are tested in packages/storage and in the
// images e2e test); the image index is the real file in a temp state dir.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '@planetlite/core';
import { StorageError, type StorageDriver } from '@planetlite/storage';
import { ImageCollector } from '../src/images/gc.js';
import { ImageIndex } from '../src/images/records.js';

const log = createLogger({ name: 'gc-test', level: 'silent' });
const sha = (c: string) => c.repeat(64);
let dir: string;
let images: ImageIndex;
let deleted: string[];
let forgotten: string[];
let kept: Set<string>;
let busy: Set<string>;
let now: number;
let used: { names: Set<string>; sha256s: Set<string> } | null;

function collector(graceMs = 60_000) {
  const storage = {
    deleteImage: async (s: string) => {
      if (busy.has(s)) throw new StorageError('image_in_use', `image ${s} has sliver roots`);
      deleted.push(s);
    },
  } as unknown as StorageDriver;
  const archives = {
    forget: (_name: string, s: string) => {
      forgotten.push(s);
      kept.delete(s);
    },
    archives: () => [...kept],
  };
  return new ImageCollector({ stateDir: dir, images, storage, archives, inUse: () => used, graceMs, log, now: () => now });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pl-gc-'));
  images = new ImageIndex(dir);
  for (const [name, c] of [['tiny', 'a'], ['debian12', 'b'], ['old', 'c']] as const) images.put({ name, sha256: sha(c), size: 1, imported_at: '2026-11-24T00:00:00Z' });
  deleted = [];
  forgotten = [];
  kept = new Set([sha('a'), sha('b'), sha('c')]);
  busy = new Set();
  now = 1_000_000;
  used = { names: new Set(['tiny']), sha256s: new Set([sha('b')]) };
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('image garbage collection', () => {
  it('removes an image only after it has been unused for the whole grace period', async () => {
    const gc = collector(60_000);
    expect(await gc.collect()).toEqual([]);
    now += 59_000;
    expect(await gc.collect()).toEqual([]);
    now += 1_000;
    expect(await gc.collect()).toEqual(['old']);
    expect(deleted).toEqual([sha('c')]);
    expect(forgotten).toEqual([sha('c')]);
    expect(images.all().map((i) => i.name).sort()).toEqual(['debian12', 'tiny']);
  });

  it('never removes an image the desired state names or a sliver here was made from', async () => {
    const gc = collector(0);
    await gc.collect();
    now += 10 * 86_400_000;
    expect(await gc.collect()).toEqual([]);
    expect(images.all().map((i) => i.name).sort()).toEqual(['debian12', 'tiny']);
  });

  it('starts the grace period again when an image is used in between', async () => {
    const gc = collector(60_000);
    await gc.collect();
    now += 50_000;
    used!.names.add('old');
    await gc.collect();
    used!.names.delete('old');
    now += 50_000;
    expect(await gc.collect()).toEqual([]);
    now += 60_000;
    expect(await gc.collect()).toEqual(['old']);
  });

  it('keeps an image the storage pool refuses to delete, and tries again later', async () => {
    busy.add(sha('c'));
    const gc = collector(0);
    expect(await gc.collect()).toEqual([]);
    expect(images.byName('old')).toBeDefined();
    expect(kept.has(sha('c'))).toBe(true);
    busy.clear();
    expect(await gc.collect()).toEqual(['old']);
  });

  it('does nothing before the first desired state, and deletes archives no record names', async () => {
    used = null;
    const gc = collector(0);
    expect(await gc.collect()).toEqual([]);
    expect(deleted).toEqual([]);
    used = { names: new Set(['tiny', 'debian12', 'old']), sha256s: new Set([sha('d')]) };
    kept.add(sha('e')); // left by a crash between deleting the record and the archive
    kept.add(sha('d')); // being fetched for a sliver: not in the index yet
    await gc.collect();
    expect(forgotten).toEqual([sha('e')]);
    expect(kept.has(sha('d'))).toBe(true);
  });
});
