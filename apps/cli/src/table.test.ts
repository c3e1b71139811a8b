import { describe, expect, it } from 'vitest';
import { formatRecord, formatTable, relativeTime } from './table.js';

describe('formatTable', () => {
  it('aligns columns two spaces apart with no trailing blanks', () => {
    const out = formatTable(['NAME', 'SITE'], [
      ['princeton_codeen', 'princeton'],
      ['mit_x', 'mit'],
    ]);
    expect(out).toBe(['NAME              SITE', 'princeton_codeen  princeton', 'mit_x             mit'].join('\n'));
    for (const line of out.split('\n')) expect(line).toBe(line.trimEnd());
  });

  it('right-aligns numeric columns and shows empty cells as -', () => {
    const out = formatTable(['SITE', 'MAX', 'NOTE'], [
      ['a', 5, null],
      ['b', 120, ''],
      ['c', 7, true],
    ]);
    expect(out.split('\n')).toEqual(['SITE  MAX  NOTE', 'a       5  -', 'b     120  -', 'c       7  yes']);
  });

  it('prints only the header for no rows, and folds newlines in cells', () => {
    expect(formatTable(['A', 'B'], [])).toBe('A  B');
    expect(formatTable(['A'], [['x\ny']])).toBe('A\nx y');
  });

  it('counts code points, not UTF-16 units', () => {
    const out = formatTable(['N', 'X'], [['😀', '1'], ['ab', '2']]);
    expect(out.split('\n')[1]).toBe('😀   1');
  });
});

describe('formatRecord', () => {
  it('aligns values after the longest key and continues lists on indented lines', () => {
    const out = formatRecord([
      ['name', 'princeton_codeen'],
      ['expires_at', null],
      ['members', ['a@x', 'b@y']],
      ['empty', []],
    ]);
    expect(out.split('\n')).toEqual([
      'name:       princeton_codeen',
      'expires_at: -',
      'members:    a@x',
      '            b@y',
      'empty:      -',
    ]);
  });
});

describe('relativeTime', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');
  it('says how far away a time is', () => {
    expect(relativeTime('2030-01-04T01:00:00Z', now)).toBe('in 3 days');
    expect(relativeTime('2029-12-31T22:00:00Z', now)).toBe('2 hours ago');
    expect(relativeTime('2030-01-01T00:00:10Z', now)).toBe('now');
    expect(relativeTime('garbage', now)).toBe('');
  });
});
