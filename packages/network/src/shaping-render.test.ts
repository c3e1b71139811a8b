// The pure side of rate caps and counters: the tc and ip lines limit() sends for each state the
// host can be in, the rates it refuses before touching the host, and how output is parsed.
import { describe, expect, it } from 'vitest';
import type { SliverRate } from './driver.js';
import { parseLinkStats } from './nftables/devices.js';
import { ALIAS_PREFIX, DEVICE_PATTERN, deviceNames, ifbName } from './nftables/names.js';
import { htbParams, MAX_KBPS, MIN_KBPS, parseQdiscs, renderLimit, shapingDrift, sliverCounters, validateRate, type ShapingNames, type ShapingState } from './nftables/shaping.js';

const ID = '11111111-1111-4111-8111-111111111111';
const { hostIf, peerIf } = deviceNames(ID);
const ifb = ifbName(ID);
const alias = ALIAS_PREFIX + ID;
const names: ShapingNames = { hostIf, ifb, alias };
const none = { htbRoot: false, ingress: false };
const fresh: ShapingState = { host: none, ifb: null };
const capped: ShapingState = { host: { htbRoot: true, ingress: true }, ifb: { htbRoot: true, ingress: false, alias, up: true } };
const rate = (inKbps: number | null, outKbps: number | null): SliverRate => ({ inKbps, outKbps });

describe('names', () => {
  it('gives the ifb the reserved prefix pli and the same hash as the link', () => {
    expect(ifb).toBe('pli' + hostIf.slice(3));
    expect(ifb).toHaveLength(15); // IFNAMSIZ - 1
    for (const n of [hostIf, peerIf, ifb]) expect(DEVICE_PATTERN.test(n)).toBe(true);
    expect(DEVICE_PATTERN.test('plx' + hostIf.slice(3))).toBe(false);
    expect(() => ifbName('not-a-uuid')).toThrow(/uuid/);
  });
});

describe('validateRate', () => {
  it('takes integers from 8 kbit/s to 10 Gbit/s, and null', () => {
    expect(validateRate(rate(MIN_KBPS, MAX_KBPS))).toEqual(rate(8, 10_000_000));
    expect(validateRate(rate(null, null))).toEqual(rate(null, null));
  });

  it.each([
    [rate(7, null), /inKbps must be an integer number of kbit\/s from 8 to 10000000, or null for no cap: got 7/],
    [rate(null, 10_000_001), /outKbps .* got 10000001/],
    [rate(1.5, null), /inKbps .* got 1\.5/],
    [rate(Number.NaN, null), /inKbps .* got null/], // JSON has no NaN
    [rate(0, null), /inKbps .* got 0/],
    [rate(-1000, null), /inKbps .* got -1000/],
    [{ inKbps: '1000', outKbps: null } as unknown as SliverRate, /inKbps .* got "1000"/],
    [{ inKbps: 1000 } as unknown as SliverRate, /outKbps .* got undefined/],
    [null as unknown as SliverRate, /rate must be \{ inKbps, outKbps \}/],
  ])('refuses %j', (r, message) => {
    expect(() => validateRate(r)).toThrow(message);
    expect(() => renderLimit(names, fresh, r)).toThrow(message);
  });
});

describe('htbParams', () => {
  it('bursts what the rate earns in 10 ms plus one MTU', () => {
    expect(htbParams(20_000)).toEqual({ rate: '20000kbit', burst: 25_000 + 1600, quantum: 1514 });
    expect(htbParams(8)).toEqual({ rate: '8kbit', burst: 10 + 1600, quantum: 1514 });
    expect(htbParams(1001)).toMatchObject({ burst: 1252 + 1600 }); // rounded up
    expect(htbParams(MAX_KBPS).burst).toBe(12_500_000 + 1600);
  });
});

describe('renderLimit', () => {
  it('caps both directions of a fresh link: HTB on the host end, an ifb for the other way', () => {
    expect(renderLimit(names, fresh, rate(20_000, 5000))).toEqual({
      ipBefore: [`link add ${ifb} type ifb`, `link set dev ${ifb} alias ${alias}`, `link set dev ${ifb} up`],
      tc: [
        `qdisc replace dev ${hostIf} root handle 1: htb default 1`,
        `class replace dev ${hostIf} parent 1: classid 1:1 htb rate 20000kbit ceil 20000kbit burst 26600 cburst 26600 quantum 1514`,
        `qdisc replace dev ${hostIf} parent 1:1 handle 10: pfifo limit 1000`,
        `qdisc replace dev ${ifb} root handle 1: htb default 1`,
        `class replace dev ${ifb} parent 1: classid 1:1 htb rate 5000kbit ceil 5000kbit burst 7850 cburst 7850 quantum 1514`,
        `qdisc replace dev ${ifb} parent 1:1 handle 10: pfifo limit 1000`,
        // the ifb is capped before the redirect sends it anything
        `qdisc replace dev ${hostIf} handle ffff: ingress`,
        `filter replace dev ${hostIf} parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0 action mirred egress redirect dev ${ifb}`,
      ],
      ipAfter: [],
    });
  });

  it('changes a rate in place: no qdisc is added or deleted, no device made', () => {
    const plan = renderLimit(names, capped, rate(1000, 2000));
    expect(plan.ipBefore).toEqual([]);
    expect(plan.ipAfter).toEqual([]);
    expect(plan.tc.filter((l) => / root /.test(l) || l.startsWith('qdisc del'))).toEqual([]);
    expect(plan.tc).toContain(`class replace dev ${hostIf} parent 1: classid 1:1 htb rate 1000kbit ceil 1000kbit burst 2850 cburst 2850 quantum 1514`);
    expect(plan.tc).toContain(`class replace dev ${ifb} parent 1: classid 1:1 htb rate 2000kbit ceil 2000kbit burst 4100 cburst 4100 quantum 1514`);
  });

  it('removes the inbound cap alone by deleting the host end root qdisc', () => {
    const plan = renderLimit(names, capped, rate(null, 2000));
    expect(plan.tc[0]).toBe(`qdisc del dev ${hostIf} root`);
    expect(plan.tc.join('\n')).not.toContain(`class replace dev ${hostIf}`);
    expect(plan.ipAfter).toEqual([]);
  });

  it('removes the outbound cap: the redirect first, then the ifb', () => {
    expect(renderLimit(names, capped, rate(1000, null))).toEqual({
      ipBefore: [],
      tc: [
        `class replace dev ${hostIf} parent 1: classid 1:1 htb rate 1000kbit ceil 1000kbit burst 2850 cburst 2850 quantum 1514`,
        `qdisc replace dev ${hostIf} parent 1:1 handle 10: pfifo limit 1000`,
        `qdisc del dev ${hostIf} ingress`,
      ],
      ipAfter: [`link del dev ${ifb}`],
    });
  });

  it('does nothing to an uncapped link, and removing caps twice is a no-op', () => {
    expect(renderLimit(names, fresh, rate(null, null))).toEqual({ ipBefore: [], tc: [], ipAfter: [] });
  });

  it('adopts a half-made ifb (no alias, down) and an HTB root already in place', () => {
    const plan = renderLimit(names, { host: { htbRoot: true, ingress: false }, ifb: { ...none, alias: null, up: false } }, rate(null, 3000));
    expect(plan.ipBefore).toEqual([`link set dev ${ifb} alias ${alias}`, `link set dev ${ifb} up`]);
    expect(plan.tc[0]).toBe(`qdisc del dev ${hostIf} root`);
    expect(plan.tc[1]).toBe(`qdisc replace dev ${ifb} root handle 1: htb default 1`);
  });

  it('refuses a cap for a sliver without its link, but removes an ifb a crash left behind', () => {
    expect(() => renderLimit(names, { host: null, ifb: null }, rate(1000, null))).toThrow(`sliver link ${hostIf} does not exist: attach the sliver before limiting it`);
    expect(() => renderLimit(names, { host: null, ifb: null }, rate(null, 1000))).toThrow(/does not exist/);
    expect(renderLimit(names, { host: null, ifb: { ...none, alias, up: true } }, rate(null, null))).toEqual({ ipBefore: [], tc: [], ipAfter: [`link del dev ${ifb}`] });
    expect(renderLimit(names, { host: null, ifb: null }, rate(null, null))).toEqual({ ipBefore: [], tc: [], ipAfter: [] });
  });
});

describe('shapingDrift: the caps the host holds against the ones asked for', () => {
  const names: ShapingNames = { hostIf, ifb, alias };
  const capped: ShapingState = { host: { htbRoot: true, ingress: true }, ifb: { htbRoot: true, ingress: false, alias, up: true } };
  const bare: ShapingState = { host: { htbRoot: false, ingress: false }, ifb: null };
  const both = { inKbps: 1000, outKbps: 1000 };
  const table: Array<[string, ShapingState, SliverRate, string | null]> = [
    ['capped both ways as asked', capped, both, null],
    ['no caps asked, none there', bare, { inKbps: null, outKbps: null }, null],
    ['the inbound HTB is gone (deleted by hand, or never made: a kill before limit())', { ...capped, host: { htbRoot: false, ingress: true } }, both, `no inbound cap on ${hostIf}`],
    ['the ifb is gone', { ...capped, ifb: null }, both, `no outbound cap through ${ifb}`],
    ['the ifb is down', { ...capped, ifb: { ...capped.ifb!, up: false } }, both, `no outbound cap through ${ifb}`],
    ['the redirect to the ifb is gone', { ...capped, host: { htbRoot: true, ingress: false } }, both, `no outbound cap through ${ifb}`],
    ['caps lifted but still there', capped, { inKbps: null, outKbps: null }, `a lifted inbound cap still on ${hostIf}`],
    ['no link at all for a capped sliver', { host: null, ifb: null }, both, `no link ${hostIf}`],
    ['no link, a stale ifb', { host: null, ifb: capped.ifb }, { inKbps: null, outKbps: null }, `a stale ${ifb}`],
  ];
  for (const [what, state, rate, want] of table) it(what, () => expect(shapingDrift(names, state, rate)).toBe(want));
});

describe('parsing', () => {
  it('finds our HTB root and ingress qdiscs in `tc -j qdisc show`', () => {
    const json = JSON.stringify([
      { kind: 'noqueue', handle: '0:', dev: 'lo', root: true },
      { kind: 'htb', handle: '1:', dev: hostIf, root: true },
      { kind: 'pfifo', handle: '10:', dev: hostIf, parent: '1:1' },
      { kind: 'ingress', handle: 'ffff:', dev: hostIf, parent: 'ffff:fff1' },
      { kind: 'htb', handle: '2:', dev: ifb, root: true }, // not ours: replaced
      { kind: 'htb', handle: '1:', dev: 'eth0', parent: '5:1' }, // not a root
    ]);
    const q = parseQdiscs(json);
    expect(q.get(hostIf)).toEqual({ htbRoot: true, ingress: true });
    expect(q.get(ifb)).toEqual({ htbRoot: false, ingress: false });
    expect(q.get('eth0')).toEqual({ htbRoot: false, ingress: false });
    expect(q.get('lo')).toEqual({ htbRoot: false, ingress: false });
    expect(parseQdiscs('').size).toBe(0);
  });

  it('maps host-end statistics to per-sliver counters, the other way round', () => {
    const other = '22222222-2222-4222-8222-222222222222';
    const json = JSON.stringify([
      { ifname: 'lo', stats64: { rx: { bytes: 5 }, tx: { bytes: 5 } } },
      { ifname: hostIf, ifalias: alias, stats64: { rx: { bytes: 100 }, tx: { bytes: 2 ** 40 } } },
      { ifname: peerIf, ifalias: alias, stats64: { rx: { bytes: 7 }, tx: { bytes: 7 } } }, // the peer: not counted twice
      { ifname: ifb, ifalias: alias, stats64: { rx: { bytes: 9 }, tx: { bytes: 9 } } }, // the ifb: not counted twice
      { ifname: deviceNames(other).hostIf, stats64: { rx: { bytes: 1 }, tx: { bytes: 1 } } }, // no alias: whose?
      { ifname: 'plhnothex', ifalias: ALIAS_PREFIX + other, stats64: { rx: { bytes: 1 }, tx: { bytes: 1 } } },
    ]);
    const counters = sliverCounters(parseLinkStats(json));
    expect([...counters]).toEqual([[ID, { rxBytes: 2 ** 40, txBytes: 100 }]]);
  });
});
