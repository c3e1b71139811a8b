// The agent's edge for desired-state documents, alone: which slivers of a document are taken,
// which are refused and why (reconcile.test.ts shows what a refused sliver then does on the host).
import { describe, expect, it } from 'vitest';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import { screenDesiredState } from '../src/screen.js';

const BOUNDS = { memoryMb: 4096, cpuPercent: 200 };
let n = 0;

function sliver(first: number, last: number, patch: Partial<DesiredSliver> = {}): DesiredSliver {
  n++;
  return {
    id: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, slice: 'lab_exp', kind: 'lxc', desired: 'running', restart_seq: 0, reset_seq: 0,
    image: { name: 'tiny', sha256: null, magnet: null, web_seed: null },
    resources: { memory_mb: 64, cpu_shares: 1024, disk_mb: 64, net_kbps: 1000 }, memory_reset: 'restart',
    ports: { first, last }, expires_at: '2030-01-01T00:00:00.000Z', keys: ['ssh-ed25519 AAAA member@lab'],
    ...patch,
  };
}

function doc(slivers: unknown[]): DesiredState {
  return { node_id: '00000000-0000-4000-8000-0000000000ff', address: '192.0.2.1', port_window: { first: 20000, last: 29999 }, slivers: slivers as DesiredSliver[] };
}

const ids = (list: DesiredSliver[]) => list.map((s) => s.id);

describe('screenDesiredState', () => {
  it('takes sound slivers in document order', () => {
    const list = [sliver(20010, 20019), sliver(20000, 20009), sliver(20020, 20020)];
    const out = screenDesiredState(doc(list), BOUNDS);
    expect(ids(out.accepted)).toEqual(ids(list));
    expect(out.refused.size).toBe(0);
  });

  it('refuses, in document order, a sliver whose ports overlap those of one taken before it', () => {
    const a = sliver(20000, 20009);
    const b = sliver(20005, 20014); // overlaps a: refused
    const c = sliver(20010, 20019); // overlaps only b, which was refused: taken
    const wide = sliver(20000, 20030); // spans a and c: refused, naming one of them
    const inside = sliver(20002, 20003); // inside a: refused
    const out = screenDesiredState(doc([a, b, c, wide, inside]), BOUNDS);
    expect(ids(out.accepted)).toEqual([a.id, c.id]);
    expect(out.refused.get(b.id)).toBe(`refused by this node: ports 20005-20014 overlap those of sliver ${a.id}`);
    expect(out.refused.get(wide.id)).toMatch(new RegExp(`overlap those of sliver (${a.id}|${c.id})$`));
    expect(out.refused.get(inside.id)).toMatch(new RegExp(`overlap those of sliver ${a.id}$`));
  });

  it('lets a sliver being deleted give up its ports, and keeps the ports of one listed twice', () => {
    const gone = sliver(20000, 20009, { desired: 'deleted' });
    const heir = sliver(20000, 20009);
    const twice = sliver(20100, 20109);
    const late = sliver(20105, 20105);
    const out = screenDesiredState(doc([gone, heir, twice, { ...twice, slice: 'lab_other' }, late]), BOUNDS);
    expect(ids(out.accepted)).toEqual([gone.id, heir.id]);
    expect(out.refused.get(twice.id)).toBe('refused by this node: the sliver is in the document twice');
    // The copy this node last accepted keeps running on those ports.
    expect(out.refused.get(late.id)).toMatch(new RegExp(`overlap those of sliver ${twice.id}$`));
  });

  it('says where a sliver departs from the schema, and what breaks a node rule', () => {
    const bad = { ...sliver(20000, 20009), restart_seq: 'one' };
    const fat = sliver(20010, 20019, { resources: { memory_mb: 8192, cpu_shares: 1024, disk_mb: 64, net_kbps: 1000 } });
    const outside = sliver(30000, 30009);
    const out = screenDesiredState(doc([bad, fat, outside, { id: 'not-an-id' }]), BOUNDS);
    expect(out.accepted).toEqual([]);
    expect(out.refused.get(bad.id)).toMatch(/^refused by this node: \/restart_seq: /);
    expect(out.refused.get(fat.id)).toBe('refused by this node: memory_mb 8192 is more than this node has (4096)');
    expect(out.refused.get(outside.id)).toBe("refused by this node: ports 30000-30009 are not within the node's port window 20000-29999");
    expect(out.unnamed).toEqual(['sliver #3: no valid id']);
  });

  it('takes a node of 2,000 slivers whole, and finds the one clash in it', () => {
    const list = Array.from({ length: 2000 }, (_, i) => sliver(20000 + 4 * i, 20000 + 4 * i + 3));
    const clash = sliver(20000 + 4 * 1234 + 2, 20000 + 4 * 1234 + 5);
    const out = screenDesiredState(doc([...list.slice().reverse(), clash]), BOUNDS);
    expect(out.accepted).toHaveLength(2000);
    expect([...out.refused.keys()]).toEqual([clash.id]);
    expect(out.refused.get(clash.id)).toMatch(new RegExp(`overlap those of sliver (${list[1234]!.id}|${list[1235]!.id})$`));
  });
});
