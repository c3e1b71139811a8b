import { describe, expect, it } from 'vitest';
import { jsonEqual } from './json.js';

describe('jsonEqual', () => {
  // Each pair is compared both ways, and against what JSON.stringify of each side says (with the
  // keys sorted: key order is not a difference here).
  const sorted = (v: unknown): unknown => (Array.isArray(v) ? v.map(sorted) : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined).sort(([p], [q]) => (p < q ? -1 : 1)).map(([k, x]) => [k, sorted(x)])) : v);
  const cases: [string, unknown, unknown][] = [
    ['equal scalars', 3, 3],
    ['different numbers', 3, 4],
    ['a number and its string', 3, '3'],
    ['null and an empty object', null, {}],
    ['null and null', null, null],
    ['false and null', false, null],
    ['an empty array and an empty object', [], {}],
    ['arrays in another order', [1, 2], [2, 1]],
    ['a longer array', [1, 2], [1, 2, 3]],
    ['objects with keys in another order', { a: 1, b: { c: [1, { d: 'x' }] } }, { b: { c: [1, { d: 'x' }] }, a: 1 }],
    ['a nested difference', { a: 1, b: { c: [1, { d: 'x' }] } }, { a: 1, b: { c: [1, { d: 'y' }] } }],
    ['a key more', { a: 1 }, { a: 1, b: 2 }],
    ['a key more whose value is undefined', { a: 1 }, { a: 1, b: undefined }],
    ['a key more whose value is null', { a: 1 }, { a: 1, b: null }],
    ['same count of keys, other names', { a: 1, b: undefined }, { a: 1, c: 2 }],
  ];
  for (const [name, a, b] of cases) {
    it(`${name}: as JSON.stringify says`, () => {
      const expected = JSON.stringify(sorted(a)) === JSON.stringify(sorted(b));
      expect(jsonEqual(a, b)).toBe(expected);
      expect(jsonEqual(b, a)).toBe(expected);
    });
  }

  it('tells a sliver part changed in one key from itself', () => {
    const sliver = { id: 's1', slice: 'pl_a', keys: ['ssh-ed25519 AAAA one', 'ssh-ed25519 AAAA two'], resources: { cpu_shares: 1024, memory_mb: 512 }, ports: { first: 20000, last: 20009 } };
    const copy = JSON.parse(JSON.stringify(sliver)) as typeof sliver;
    expect(jsonEqual(sliver, copy)).toBe(true);
    copy.keys[1] = 'ssh-ed25519 AAAA three';
    expect(jsonEqual(sliver, copy)).toBe(false);
  });
});
