// The ledger on disk: one file per sliver, an old slivers.json moved in, crash leftovers swept.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ledger, readLedger, type SliverRecord } from '../src/ledger.js';

const A = '0a8e2d4c-0000-4000-8000-00000000000a';
const B = '0a8e2d4c-0000-4000-8000-00000000000b';
const C = '0a8e2d4c-0000-4000-8000-00000000000c';

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'pl-ledger-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const files = () => readdirSync(join(dir, 'ledger')).sort();

describe('the ledger on disk', () => {
  it('keeps each sliver in a file of its own, written at each change and removed at release', () => {
    const l = new Ledger(dir);
    const a = l.claim(A, 'site_a', 100);
    const b = l.claim(B, 'site_b', 100);
    expect([a.slot, b.slot]).toEqual([0, 1]);
    expect(files()).toEqual([`${A}.json`, `${B}.json`]);
    expect(statSync(join(dir, 'ledger', `${A}.json`)).mode & 0o777).toBe(0o600);
    l.update(B, { restart_seq: 3 });
    expect(JSON.parse(readFileSync(join(dir, 'ledger', `${B}.json`), 'utf8'))).toMatchObject({ id: B, slot: 1, restart_seq: 3 });
    l.release(A);
    expect(files()).toEqual([`${B}.json`]);
    // A new agent reads what this one left; the freed slot is the next one given out.
    const again = new Ledger(dir);
    expect(again.all()).toEqual([{ ...b, restart_seq: 3 }]);
    expect(again.claim(C, 'site_c', 100).slot).toBe(0);
  });

  it('writes a done mark within a second or at flush, together with the record', async () => {
    const l = new Ledger(dir);
    l.claim(A, 'site_a', 100);
    l.markDone(A, 'key1');
    expect(new Ledger(dir).get(A)?.done).toBeUndefined();
    l.flush();
    expect(new Ledger(dir).get(A)?.done).toBe('key1');
    l.markDone(A, null);
    await new Promise((r) => setTimeout(r, 1200));
    expect(new Ledger(dir).get(A)).not.toHaveProperty('done');
  });

  it('moves the slivers.json of earlier versions into the folder, and sweeps writes a crash cut short', () => {
    const old: SliverRecord[] = [
      { id: A, slice: 'site_a', slot: 0, idmap_base: 1_000_000, image_sha256: null, restart_seq: 0, reset_seq: 0, keys_hash: null },
      { id: B, slice: 'site_b', slot: 4, idmap_base: 1_065_536, image_sha256: null, restart_seq: 2, reset_seq: 1, keys_hash: 'k', kind: 'kvm' },
    ];
    writeFileSync(join(dir, 'slivers.json'), JSON.stringify(old));
    expect(readLedger(dir)).toEqual(old);
    const l = new Ledger(dir);
    expect(l.all().sort((x, y) => x.slot - y.slot)).toEqual(old);
    expect(existsSync(join(dir, 'slivers.json'))).toBe(false);
    expect(files()).toEqual([`${A}.json`, `${B}.json`]);

    writeFileSync(join(dir, 'ledger', `${C}.json.tmp-4242`), '{"id": "half');
    expect(new Ledger(dir).all()).toHaveLength(2);
    expect(files()).toEqual([`${A}.json`, `${B}.json`]);
  });

  it('moves slivers.json in again after a crash in the middle of the move, and removes the half-made folder', () => {
    const old: SliverRecord[] = [{ id: A, slice: 'site_a', slot: 0, idmap_base: 1_000_000, image_sha256: null, restart_seq: 0, reset_seq: 0, keys_hash: null }];
    writeFileSync(join(dir, 'slivers.json'), JSON.stringify(old));
    // What a crash leaves: another pid's folder, half written, never renamed; the old file kept.
    mkdirSync(join(dir, 'ledger.tmp-4242'));
    writeFileSync(join(dir, 'ledger.tmp-4242', `${A}.json`), '{"id": "half');
    expect(new Ledger(dir).all()).toEqual(old);
    expect(readdirSync(dir).sort()).toEqual(['ledger']);
  });

  it('refuses an id that cannot name a file', () => {
    expect(() => new Ledger(dir).claim('../x', 'site_a', 100)).toThrow(/cannot name a ledger record/);
    expect(files()).toEqual([]);
  });
});
