// The freeze on memory pressure without a host: sampled PSI figures in, decisions out — which
// sliver, when it is thawed, when a freeze turns into a reset, and users' actions winning.
import { describe, expect, it } from 'vitest';
import { createLogger } from '@planetlite/core';
import { parsePressure } from '@planetlite/instance';
import { defaultPressureSettings, PressurePolicy, PressureResponder, validatePressureSettings, type PressureEvent, type PressureSample, type PressureSettings } from '../src/pressure.js';
import { defaultWatchdogSettings, validateWatchdogSettings } from '../src/watchdog.js';

const settings = (over: Partial<PressureSettings> = {}): PressureSettings => ({ freeze_psi_some: 30, thaw_psi_some: 10, sliver_psi_min: 5, freeze_timeout_seconds: 20, freeze_strikes: 3, ...over });
/** node: the node's some avg10; slivers: id → own some avg10 (full is half of it). */
const sample = (at: number, node: number, slivers: Record<string, number>): PressureSample => ({
  at,
  node: { some: node, full: node / 2 },
  slivers: Object.entries(slivers).map(([id, some]) => ({ id, slice: `s_${id}`, psi: { some, full: some / 2 } })),
});

describe('pressure policy', () => {
  it('freezes the sliver stalling most on memory, not the biggest, once the node crosses the level', () => {
    const p = new PressurePolicy(settings());
    expect(p.observe(sample(0, 29.9, { quiet: 1, thrash: 40 })).kind).toBe('none');
    const d = p.observe(sample(1000, 35, { quiet: 1, big: 3, thrash: 40 }));
    expect(d.kind).toBe('freeze');
    if (d.kind !== 'freeze') return;
    expect(d.sliver.id).toBe('thrash');
    expect(d.strike).toBe(1);
    expect(d.why).toContain('35%');
    expect(d.figures).toMatchObject({ node_psi_some_avg10: 35, node_psi_full_avg10: 17.5, freeze_psi_some: 30, thaw_psi_some: 10 });
    expect(d.figures.top.map((t) => t.sliver)).toEqual(['thrash', 'big', 'quiet']);
    expect(p.held?.id).toBe('thrash');
  });

  it('breaks a tie on "some" with "full"', () => {
    const p = new PressurePolicy(settings());
    const s = sample(0, 50, {});
    s.slivers = [{ id: 'a', slice: 's', psi: { some: 20, full: 1 } }, { id: 'b', slice: 's', psi: { some: 20, full: 15 } }];
    const d = p.observe(s);
    expect(d.kind === 'freeze' && d.sliver.id).toBe('b');
  });

  it('holds one sliver at a time and thaws it once the node is below the thaw level', () => {
    const p = new PressurePolicy(settings());
    expect(p.observe(sample(0, 50, { a: 40, b: 30 })).kind).toBe('freeze');
    // Still above the thaw level: no second freeze, no thaw.
    expect(p.observe(sample(1000, 45, { b: 30 })).kind).toBe('none');
    expect(p.observe(sample(2000, 10, { b: 2 })).kind).toBe('none');
    const t = p.observe(sample(3000, 9.9, { b: 2 }));
    expect(t.kind).toBe('thaw');
    if (t.kind !== 'thaw') return;
    expect(t.held.id).toBe('a');
    expect(t.frozen_ms).toBe(3000);
    expect(p.held).toBeNull();
  });

  it('resets a frozen sliver when the pressure has not fallen within the timeout', () => {
    const p = new PressurePolicy(settings({ freeze_timeout_seconds: 20 }));
    expect(p.observe(sample(0, 50, { a: 40 })).kind).toBe('freeze');
    expect(p.observe(sample(19_999, 40, {})).kind).toBe('none');
    const r = p.observe(sample(20_000, 40, {}));
    expect(r.kind).toBe('reset');
    if (r.kind !== 'reset') return;
    expect(r.sliver.id).toBe('a');
    expect(r.frozen_ms).toBe(20_000);
    expect(r.why).toContain('after 20 s frozen');
    expect(p.held).toBeNull();
  });

  it('resets instead of freezing a sliver that brings the pressure back again and again', () => {
    const p = new PressurePolicy(settings({ freeze_strikes: 3 }));
    let at = 0;
    for (const strike of [1, 2]) {
      const f = p.observe(sample((at += 1000), 50, { a: 40, b: 6 }));
      expect(f.kind === 'freeze' && f.strike).toBe(strike);
      expect(p.observe(sample((at += 1000), 5, { b: 1 })).kind).toBe('thaw');
    }
    const r = p.observe(sample((at += 1000), 50, { a: 40, b: 6 }));
    expect(r.kind).toBe('reset');
    expect(r.kind === 'reset' && r.frozen_ms).toBeNull();
    expect(r.kind === 'reset' && r.why).toContain('3 times');
  });

  it('forgets strikes older than ten minutes', () => {
    const p = new PressurePolicy(settings({ freeze_strikes: 2 }));
    expect(p.observe(sample(0, 50, { a: 40 })).kind).toBe('freeze');
    expect(p.observe(sample(1000, 1, {})).kind).toBe('thaw');
    expect(p.observe(sample(601_000, 50, { a: 40 })).kind).toBe('freeze');
  });

  it('freezes nobody when no sliver stalls enough, and says so once an episode', () => {
    const p = new PressurePolicy(settings({ sliver_psi_min: 5 }));
    expect(p.observe(sample(0, 60, { a: 4.9, b: 0 })).kind).toBe('no_culprit');
    expect(p.observe(sample(1000, 60, { a: 4.9 })).kind).toBe('none');
    expect(p.observe(sample(2000, 5, { a: 0 })).kind).toBe('none');
    expect(p.observe(sample(3000, 60, { a: 1 })).kind).toBe('no_culprit');
  });

  it('lets go of a sliver its users took back; a user-thawed one is not frozen again until the pressure fell', () => {
    const p = new PressurePolicy(settings());
    expect(p.observe(sample(0, 50, { a: 40, b: 20 })).kind).toBe('freeze');
    p.release('a', true);
    expect(p.held).toBeNull();
    // a is exempt in this episode: the next culprit is b.
    const d = p.observe(sample(1000, 50, { a: 40, b: 20 }));
    expect(d.kind === 'freeze' && d.sliver.id).toBe('b');
    // b's users froze it themselves (it leaves the candidates): released without a thaw.
    p.release('b', false);
    expect(p.observe(sample(2000, 50, { a: 40 })).kind).toBe('no_culprit');
    // The episode ends; a may be frozen again in the next one.
    expect(p.observe(sample(3000, 1, { a: 0 })).kind).toBe('none');
    const again = p.observe(sample(4000, 50, { a: 40 }));
    expect(again.kind === 'freeze' && again.sliver.id).toBe('a');
  });

  it('never freezes with the freeze off or without PSI', () => {
    expect(new PressurePolicy(settings({ freeze_psi_some: null })).observe(sample(0, 100, { a: 100 })).kind).toBe('none');
    expect(new PressurePolicy(settings()).observe({ at: 0, node: null, slivers: [{ id: 'a', slice: 's', psi: { some: 99, full: 99 } }] }).kind).toBe('none');
  });

  it('refuses bad settings with the field named, also through the watchdog settings', () => {
    expect(() => validatePressureSettings(settings({ thaw_psi_some: 40 }))).toThrow(/thaw_psi_some/);
    expect(() => validatePressureSettings(settings({ freeze_timeout_seconds: 0 }))).toThrow(/freeze_timeout_seconds/);
    expect(() => validateWatchdogSettings({ ...defaultWatchdogSettings, freeze_strikes: 0 })).toThrow(/freeze_strikes/);
    expect(() => validatePressureSettings(defaultPressureSettings)).not.toThrow();
  });

  it('reads a cgroup memory.pressure file', () => {
    expect(parsePressure('some avg10=12.50 avg60=3.00 avg300=0.70 total=1105173\nfull avg10=5.44 avg60=1.51 avg300=0.34 total=1105173\n')).toEqual({ some: 12.5, full: 5.44 });
    expect(parsePressure('')).toBeNull();
  });
});

describe('pressure responder', () => {
  it('freezes, thaws and resets through its callbacks, with the figures in each event', async () => {
    const pressure = new Map([['a', 40], ['b', 1]]);
    const frozen = new Set<string>();
    const events: PressureEvent[] = [];
    const resets: string[] = [];
    const r = new PressureResponder({
      settings: settings({ freeze_strikes: 2 }),
      slivers: async () => [...pressure].filter(([id]) => !frozen.has(id)).map(([id, some]) => ({ id, slice: `s_${id}`, psi: { some, full: 0 } })),
      freeze: async (id) => void frozen.add(id),
      thaw: async (id) => void frozen.delete(id),
      reset: async (id) => { resets.push(id); return { action: 'restart' }; },
      emit: (e) => events.push(e),
      log: createLogger({ name: 'test', level: 'silent' }),
    });
    expect((await r.tick(0, { some: 50, full: 20 })).kind).toBe('freeze');
    expect(frozen.has('a')).toBe(true);
    expect((await r.tick(1000, { some: 2, full: 0 })).kind).toBe('thaw');
    expect(frozen.has('a')).toBe(false);
    expect((await r.tick(2000, { some: 50, full: 20 })).kind).toBe('reset');
    expect(resets).toEqual(['a']);
    expect(events.map((e) => `${e.type} ${e.sliver}`)).toEqual(['sliver.frozen a', 'sliver.thawed a', 'watchdog.reset a']);
    expect(events[0]!.data).toMatchObject({ node_psi_some_avg10: 50, sliver_psi_some_avg10: 40, slice: 's_a', strike: 1 });
    expect(typeof events[0]!.data.reaction_ms).toBe('number');
    expect(events[1]!.data).toMatchObject({ frozen_ms: 1000, node_psi_some_avg10: 2, error: null });
    expect(events[2]!.data).toMatchObject({ level: 'pressure', action: 'restart', node_psi_some_avg10: 50, frozen_ms: null });
  });

  it('lets go when the freeze fails, and records why', async () => {
    const events: PressureEvent[] = [];
    const r = new PressureResponder({
      settings: settings(),
      slivers: async () => [{ id: 'a', slice: 's', psi: { some: 40, full: 0 } }],
      freeze: async () => { throw new Error('lxc-freeze failed'); },
      thaw: async () => undefined,
      reset: async () => ({ action: 'restart' }),
      emit: (e) => events.push(e),
      log: createLogger({ name: 'test', level: 'silent' }),
    });
    await r.tick(0, { some: 50, full: 0 });
    expect(r.policy.held).toBeNull();
    expect(events[0]).toMatchObject({ type: 'watchdog.warning', sliver: 'a', data: { level: 'freeze', error: 'lxc-freeze failed' } });
  });

  it("reads no sliver's pressure while the node is calm and none is held", async () => {
    let asked = 0;
    const r = new PressureResponder({
      settings: settings(),
      slivers: async () => { asked++; return [{ id: 'a', slice: 's', psi: { some: 40, full: 0 } }]; },
      freeze: async () => undefined,
      thaw: async () => undefined,
      reset: async () => ({ action: 'restart' }),
      emit: () => undefined,
      log: createLogger({ name: 'test', level: 'silent' }),
    });
    expect((await r.tick(0, { some: 5, full: 0 })).kind).toBe('none');
    expect((await r.tick(1000, { some: 20, full: 0 })).kind).toBe('none'); // above thaw, below freeze
    expect(asked).toBe(0);
    expect((await r.tick(2000, { some: 50, full: 0 })).kind).toBe('freeze');
    expect(asked).toBe(1);
    // While one is held, each sample reads them (the thaw's figures name the top slivers).
    expect((await r.tick(3000, { some: 20, full: 0 })).kind).toBe('none');
    expect((await r.tick(4000, { some: 2, full: 0 })).kind).toBe('thaw');
    expect(asked).toBe(3);
  });
});
