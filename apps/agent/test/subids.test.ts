// Slivers' host ids from root's subordinate ranges: parsing, the common range, and the one-line
// errors an agent starts with when LXC (through newuidmap) would refuse every sliver.
import { describe, expect, it } from 'vitest';
import { commonRange, IDMAP_FIRST, IDMAP_SIZE, rangeToReserve, rootRanges, sliverIdRange } from '../src/subids.ts';

const files = (subuid: string, subgid: string, newuidmap = true) => ({ subuid, subgid, newuidmap });

describe('subordinate id ranges', () => {
  it("reads root's lines only, by name or uid 0", () => {
    expect(rootRanges('alice:100000:65536\nroot:1000000:1000000000\n# x\n0:5:70000\nbad:line\n')).toEqual([
      { start: 1_000_000, count: 1_000_000_000 },
      { start: 5, count: 70_000 },
    ]);
  });

  it('takes the largest run inside both files', () => {
    expect(commonRange([{ start: 1_000_000, count: 10 * IDMAP_SIZE }], [{ start: 1_000_000 + IDMAP_SIZE, count: 20 * IDMAP_SIZE }])).toEqual({ start: 1_000_000 + IDMAP_SIZE, count: 9 * IDMAP_SIZE });
    expect(commonRange([{ start: 0, count: IDMAP_SIZE }], [{ start: IDMAP_SIZE, count: IDMAP_SIZE }])).toBeNull();
  });

  it("keeps the agent's own layout without uidmap and without ranges", () => {
    expect(sliverIdRange(files('', '', false), 16384)).toEqual({ first: IDMAP_FIRST, slots: 16384, probe: 0xfffe0000, source: 'own' });
  });

  it('uses the range the installer reserves: the same ids as before, the probe above the last slot', () => {
    const r = rangeToReserve(16384);
    const line = `root:${r.start}:${r.count}\n`;
    const range = sliverIdRange(files(line, line), 16384, [{ slot: 3, idmap_base: IDMAP_FIRST + 3 * IDMAP_SIZE }]);
    expect(range).toEqual({ first: IDMAP_FIRST, slots: 16384, probe: IDMAP_FIRST + 16384 * IDMAP_SIZE, source: 'subid' });
  });

  it("caps the node's slots at what LXD's or Incus's range holds", () => {
    const line = 'root:1000000:1000000000\n';
    expect(sliverIdRange(files(line, line), 16384).slots).toBe(Math.floor(1e9 / IDMAP_SIZE) - 1);
  });

  it('refuses to start in one line: uidmap without a range for root', () => {
    expect(() => sliverIdRange(files('alice:100000:65536\n', 'alice:100000:65536\n'), 64)).toThrow(
      /^newuidmap is installed .* root has no range in \/etc\/subuid and \/etc\/subgid; reserve them with: usermod --add-subuids 1000000-5259839 --add-subgids 1000000-5259839 root$/,
    );
  });

  it('refuses a range too small for one sliver and the probe, or for the slots already held', () => {
    expect(() => sliverIdRange(files('root:100000:65536\n', 'root:100000:65536\n'), 64)).toThrow(/too small .*need 2 blocks/);
    const line = `root:${IDMAP_FIRST}:${4 * IDMAP_SIZE}\n`;
    expect(sliverIdRange(files(line, line), 64, [{ slot: 2, idmap_base: IDMAP_FIRST + 2 * IDMAP_SIZE }]).slots).toBe(3);
    expect(() => sliverIdRange(files(line, line), 64, [{ slot: 3, idmap_base: IDMAP_FIRST + 3 * IDMAP_SIZE }])).toThrow(/too small .*need 5 blocks/);
    expect(() => sliverIdRange(files(line, line), 64).toString()).not.toThrow();
  });

  it('refuses slivers made with ids outside the range (a range added after they were built)', () => {
    const line = 'root:100000:1000000000\n';
    expect(() => sliverIdRange(files(line, line), 64, [{ slot: 0, idmap_base: IDMAP_FIRST }])).toThrow(/1 sliver\(s\) on this node have host ids outside .* starting at 100000/);
  });
});
