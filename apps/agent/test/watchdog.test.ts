// The watchdog's policy and loop without a host: levels, hysteresis, cooldown, the choice of
// sliver, and that nothing but a sliver is ever reset. The real thing runs in test/e2e/watchdog.test.ts.
import { describe, expect, it } from 'vitest';
import { createLogger } from '@planetlite/core';
import { defaultWatchdogSettings, parseMeminfo, parsePsi, validateWatchdogSettings, Watchdog, WatchdogPolicy, type HostMemory, type Sample, type WatchdogEvent, type WatchdogSettings } from '../src/watchdog.js';

const MiB = 1024 * 1024;
const host: HostMemory = { totalBytes: 1000 * MiB, availableBytes: 900 * MiB, swapTotalBytes: 0, swapFreeBytes: 0, psi: { some: 0, full: 0 } };
const budget = (over: Partial<WatchdogSettings> = {}): WatchdogSettings => ({ ...defaultWatchdogSettings, budget_mb: 100, cooldown_seconds: 10, ...over });
const sample = (at: number, mib: Record<string, number>, h: HostMemory = host): Sample => ({
  at,
  host: h,
  slivers: Object.entries(mib).map(([id, m]) => ({ id, slice: `site_${id}`, bytes: m * MiB })),
});

describe('watchdog policy', () => {
  it('warns once per episode, again only after the level fell below warn − hysteresis', () => {
    const p = new WatchdogPolicy(budget());
    expect(p.observe(sample(0, { a: 50, b: 30 })).kind).toBe('none');
    expect(p.observe(sample(1000, { a: 60, b: 26 })).kind).toBe('warn');
    expect(p.observe(sample(2000, { a: 60, b: 27 })).kind).toBe('none');
    expect(p.observe(sample(3000, { a: 55, b: 26 })).kind).toBe('none'); // 81%: inside the hysteresis band
    expect(p.observe(sample(4000, { a: 60, b: 26 })).kind).toBe('none');
    expect(p.observe(sample(5000, { a: 50, b: 20 })).kind).toBe('none'); // 70%: cleared
    expect(p.observe(sample(6000, { a: 60, b: 26 })).kind).toBe('warn');
  });

  it('resets the sliver using the most memory, with the figures that triggered it', () => {
    const p = new WatchdogPolicy(budget());
    const d = p.observe(sample(0, { quiet: 10, hog: 75, other: 6 }));
    expect(d.kind).toBe('reset');
    if (d.kind !== 'reset') return;
    expect(d.victim.id).toBe('hog');
    expect(d.figures).toMatchObject({ mode: 'budget', used_bytes: 91 * MiB, limit_bytes: 100 * MiB, used_percent: 91, reset_percent: 90, slivers_bytes: 91 * MiB });
    expect(d.figures.top.map((t) => t.sliver)).toEqual(['hog', 'quiet', 'other']);
    expect(d.why).toContain('91%');
  });

  it('resets no second sliver within the cooldown, however high the level stays', () => {
    const p = new WatchdogPolicy(budget({ cooldown_seconds: 10 }));
    expect(p.observe(sample(0, { a: 95 })).kind).toBe('reset');
    for (let t = 1000; t < 10_000; t += 1000) expect(p.observe(sample(t, { a: 1, b: 94 })).kind).toBe('none');
    const later = p.observe(sample(10_000, { a: 1, b: 94 }));
    expect(later.kind === 'reset' && later.victim.id).toBe('b');
  });

  it('in host mode counts used memory and swap over all of it, and never resets when no sliver holds memory', () => {
    const p = new WatchdogPolicy({ ...defaultWatchdogSettings });
    const full: HostMemory = { totalBytes: 1000 * MiB, availableBytes: 50 * MiB, swapTotalBytes: 1000 * MiB, swapFreeBytes: 100 * MiB, psi: null };
    const f = p.figures(sample(0, {}, full));
    expect(f).toMatchObject({ mode: 'host', used_bytes: 1850 * MiB, limit_bytes: 2000 * MiB, used_percent: 92.5, swap_used_bytes: 900 * MiB, psi_full_avg10: null });
    expect(p.observe(sample(0, {}, full)).kind).toBe('nothing_to_reset');
    expect(p.observe(sample(1000, {}, full)).kind).toBe('none'); // said once
    expect(p.observe(sample(2000, { s: 0 }, full)).kind).toBe('none'); // a sliver with no memory is no candidate
  });

  it('can reset on memory pressure (PSI full avg10) below the memory level', () => {
    const p = new WatchdogPolicy(budget({ psi_full_reset: 20 }));
    const stalled = { ...host, psi: { some: 60, full: 25 } };
    const d = p.observe(sample(0, { a: 10, b: 20 }, stalled));
    expect(d.kind === 'reset' && d.why).toContain('pressure');
  });

  it('refuses bad settings with the field named', () => {
    expect(() => validateWatchdogSettings(budget({ warn_percent: 95, reset_percent: 90 }))).toThrow(/warn_percent/);
    expect(() => validateWatchdogSettings(budget({ interval_ms: 5 }))).toThrow(/interval_ms/);
    expect(() => validateWatchdogSettings(budget({ budget_mb: -1 }))).toThrow(/budget_mb/);
  });
});

describe('host memory parsing', () => {
  it('reads /proc/meminfo and /proc/pressure/memory', () => {
    const mi = parseMeminfo('MemTotal:       24683520 kB\nMemFree:        24000000 kB\nMemAvailable:   24100000 kB\nHugePages_Total:       0\n');
    expect(mi.get('MemTotal')).toBe(24683520 * 1024);
    expect(mi.get('MemAvailable')).toBe(24100000 * 1024);
    expect(mi.get('HugePages_Total')).toBe(0);
    expect(parsePsi('some avg10=1.50 avg60=0.00 avg300=0.00 total=5313\nfull avg10=0.25 avg60=0.00 avg300=0.00 total=880\n')).toEqual({ some: 1.5, full: 0.25 });
    expect(parsePsi('')).toBeNull();
  });
});

describe('watchdog loop', () => {
  it('resets through the callback, records the event with its reaction time, and stops cleanly', async () => {
    const mem = new Map([['a', 10 * MiB], ['b', 85 * MiB]]);
    const events: WatchdogEvent[] = [];
    const resets: string[] = [];
    const w = new Watchdog({
      settings: budget({ interval_ms: 100 }),
      slivers: () => [...mem.keys()].map((id) => ({ id, slice: `s_${id}` })),
      memoryOf: async (id) => mem.get(id) ?? null,
      reset: async (id) => { resets.push(id); mem.set(id, MiB); return { action: 'restart' }; },
      emit: (e) => events.push(e),
      log: createLogger({ name: 'test', level: 'silent' }),
      readHost: () => host,
    });
    w.start();
    await new Promise((r) => setTimeout(r, 450));
    await w.stop();
    expect(resets).toEqual(['b']);
    const reset = events.find((e) => e.type === 'watchdog.reset');
    expect(reset?.sliver).toBe('b');
    expect(reset?.data).toMatchObject({ action: 'restart', slice: 's_b', memory_bytes: 85 * MiB, used_percent: 95, error: null });
    expect(typeof reset?.data.reaction_ms).toBe('number');
    const count = events.length;
    await new Promise((r) => setTimeout(r, 250));
    expect(events.length).toBe(count); // stopped: no more samples
  });

  it("against the host's memory, reads no sliver's memory while the node is calm, and every sliver's near the levels", async () => {
    const read: string[] = [];
    let h: HostMemory = host; // 10 % in use
    const events: WatchdogEvent[] = [];
    const w = new Watchdog({
      settings: { ...defaultWatchdogSettings, budget_mb: null, interval_ms: 100 },
      slivers: () => [{ id: 'a', slice: 's_a' }, { id: 'b', slice: 's_b' }],
      memoryOf: async (id) => { read.push(id); return (id === 'b' ? 800 : 10) * MiB; },
      reset: async () => ({ action: 'restart' }),
      emit: (e) => events.push(e),
      log: createLogger({ name: 'test', level: 'silent' }),
      readHost: () => h,
    });
    expect((await w.tick()).kind).toBe('none');
    expect(read).toEqual([]);
    h = { ...host, availableBytes: 120 * MiB }; // 88 %: the warning, with the biggest slivers
    expect((await w.tick()).kind).toBe('warn');
    expect(read).toEqual(['a', 'b']);
    expect(events[0]?.data).toMatchObject({ mode: 'host', used_percent: 88, top: [{ sliver: 'b' }, { sliver: 'a' }] });
    h = { ...host, availableBytes: 50 * MiB }; // 95 %: the biggest is reset
    const d = await w.tick();
    expect(d.kind === 'reset' && d.victim.id).toBe('b');
    // A sliver's memory also counts for a reset on memory pressure alone.
    const p = new WatchdogPolicy({ ...defaultWatchdogSettings, psi_full_reset: 20 });
    expect(p.needsSlivers({ ...host, psi: { some: 40, full: 25 } })).toBe(true);
    expect(p.needsSlivers(host)).toBe(false);
    expect(new WatchdogPolicy(budget()).needsSlivers(host)).toBe(true);
  });
});
