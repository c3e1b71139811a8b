// The shape of a reconcile pass, on drivers that only record what they are asked (the real
// drivers are exercised end to end in test/e2e): a settled sliver costs no host work, a slow
// sliver holds up no other, and no more than the concurrency limit are worked on at once.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { InstanceError, type InstanceDriver, type InstanceLimits, type InstanceState } from '@planetlite/instance';
import type { NetworkDriver } from '@planetlite/network';
import type { StorageDriver } from '@planetlite/storage';
import { Reconciler } from '../src/reconcile.js';
import { Ledger } from '../src/ledger.js';
import { ImageIndex } from '../src/images/records.js';

const SHA = 'a'.repeat(64);

/** Drivers that keep their state in maps and count every call; createRoot can be held per sliver. */
function recordingDrivers(dir: string) {
  const calls: string[] = [];
  const states = new Map<string, InstanceState>();
  const roots = new Set<string>();
  const gates = new Map<string, Promise<void>>();
  const failStart = new Set<string>();
  /** Live memory limit of each running sliver (MiB), and the least each one can be lowered to. */
  const live = new Map<string, number>();
  const holds = new Map<string, number>();
  /** The memory limit (MiB) each sliver's instance was last defined with. */
  const defined = new Map<string, number>();
  /** Slivers whose memory was read, in order. */
  const figuresRead: string[] = [];
  let busy = 0;
  let maxBusy = 0;
  const note = (c: string) => calls.push(c);
  const storage = {
    name: 'fake', capabilities: { snapshots: true, quotas: true, layers: false },
    hasImage: async () => true,
    rootIdShift: async (id: string) => (roots.has(id) ? 0 : null),
    listRoots: async () => {
      note('listRoots');
      // A gate 'probe' holds the next listing only (one pass's slow read of a full node).
      const gate = gates.get('probe');
      gates.delete('probe');
      await gate;
      return [...roots];
    },
    hasRoot: async (id: string) => roots.has(id),
    createRoot: async (id: string) => {
      note(`createRoot ${id}`);
      busy++;
      maxBusy = Math.max(maxBusy, busy);
      try {
        await gates.get(id);
        const path = join(dir, 'roots', id);
        mkdirSync(path, { recursive: true });
        roots.add(id);
        return path;
      } finally {
        busy--;
      }
    },
    deleteRoot: async (id: string) => { note(`deleteRoot ${id}`); roots.delete(id); },
    usageAll: async () => new Map([...roots].map((id) => [id, { exclusiveBytes: 4096, referencedBytes: 1 << 20 }])),
  } as unknown as StorageDriver;
  const instance = {
    name: 'fake', capabilities: { unprivileged: true, freeze: true, memoryLimit: true }, status: { state: 'ready' },
    define: async (s: { id: string; memoryMb: number }) => { note(`define ${s.id}`); defined.set(s.id, s.memoryMb); if (!states.has(s.id)) states.set(s.id, 'stopped'); },
    state: async (id: string) => { note(`state ${id}`); return states.get(id) ?? 'absent'; },
    states: async () => { note('states'); return new Map(states); },
    start: async (id: string) => { note(`start ${id}`); if (failStart.has(id)) throw new Error('lxc-start failed'); states.set(id, 'running'); },
    limitDrift: (l: InstanceLimits) => (live.has(l.id) && live.get(l.id) !== l.memoryMb ? [{ file: 'memory.max', want: String(l.memoryMb), have: String(live.get(l.id)) }] : []),
    applyLimits: async (l: InstanceLimits) => {
      note(`applyLimits ${l.id}`);
      if (!live.has(l.id) || live.get(l.id) === l.memoryMb) return [];
      if (l.memoryMb < (holds.get(l.id) ?? 0)) throw new InstanceError('limits_not_applied', `memory limit ${l.memoryMb} MiB not applied, the sliver holds ${holds.get(l.id)} MiB`);
      live.set(l.id, l.memoryMb);
      return ['memory.max'];
    },
    stop: async (id: string) => { note(`stop ${id}`); states.set(id, 'stopped'); },
    kill: async (id: string) => { note(`kill ${id}`); states.set(id, 'stopped'); },
    freeze: async (id: string) => { note(`freeze ${id}`); states.set(id, 'frozen'); },
    thaw: async (id: string) => { note(`thaw ${id}`); states.set(id, 'running'); },
    memoryPressure: async () => ({ some: 12, full: 6 }),
    destroy: async (id: string) => { note(`destroy ${id}`); states.delete(id); },
    list: async () => [...states.keys()],
    memoryBytes: async (id: string) => { figuresRead.push(id); return 1 << 20; },
    cpuSeconds: async () => 1.5,
    exec: async () => ({ stdout: '', stderr: '' }),
  } as unknown as InstanceDriver;
  const network = {
    name: 'fake',
    attach: async (s: { id: string }) => { note(`attach ${s.id}`); return { id: s.id, hostIf: 'h', peerIf: 'p', hostAddress: '10.0.0.1', sliverAddress: '10.0.0.2', prefix: 30, gateway: '10.0.0.1' }; },
    apply: async () => { note('apply'); },
    detach: async (id: string) => { note(`detach ${id}`); },
    listAttached: async () => [],
    limit: async (id: string) => { note(`limit ${id}`); },
    counters: async () => new Map(),
    address: () => ({ hostAddress: '10.0.0.1', sliverAddress: '10.0.0.2', prefix: 30 }),
  } as unknown as NetworkDriver;
  return { drivers: { storage, instances: { lxc: instance }, network }, calls, states, gates, failStart, roots, live, holds, defined, figuresRead, maxBusy: () => maxBusy };
}

/** Each sliver forwards ports of its own, as the registry hands them out. */
let nextPort = 20000;
function sliver(slice: string): DesiredSliver {
  const first = nextPort;
  nextPort = nextPort + 10 > 29990 ? 20000 : nextPort + 10;
  return {
    id: randomUUID(), slice, kind: 'lxc', desired: 'running', restart_seq: 0, reset_seq: 0,
    image: { name: 'tiny', sha256: SHA, magnet: null, web_seed: null },
    resources: { memory_mb: 64, cpu_shares: 1024, disk_mb: 64, net_kbps: 1000 }, memory_reset: 'restart',
    ports: { first, last: first + 9 }, expires_at: new Date(Date.now() + 86_400_000).toISOString(), keys: [],
  };
}

const doc = (slivers: DesiredSliver[]): DesiredState => ({ node_id: randomUUID(), address: '192.0.2.1', port_window: { first: 20000, last: 29999 }, slivers });

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pl-reconcile-'));
  new ImageIndex(dir).put({ name: 'tiny', sha256: SHA, size: 1, imported_at: new Date().toISOString() });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function reconciler(drivers: ReturnType<typeof recordingDrivers>['drivers'], concurrency?: number) {
  return new Reconciler({ drivers, ledger: new Ledger(dir), images: new ImageIndex(dir), log: createLogger({ name: 't', level: 'silent' }), maxSlots: 1000, ...(concurrency ? { concurrency } : {}) });
}

describe('a reconcile pass', () => {
  it('tears down nothing the newest document wants, though its own pass read the host while a newer one built it', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const a = sliver('site_a');
    const x = sliver('site_x');
    const node = doc([a]);
    await r.reconcile(node);
    // A pass for a document without x reads the host slowly (a node of 2,000 slivers)…
    let release!: () => void;
    fake.gates.set('probe', new Promise<void>((res) => (release = res)));
    const slow = r.reconcile({ ...node, slivers: [a] });
    await new Promise((res) => setTimeout(res, 20));
    // …while the next document's pass builds x; then the slow pass plans with what it read.
    await r.reconcile({ ...node, slivers: [a, x] });
    expect(fake.states.get(x.id)).toBe('running');
    release();
    await slow;
    expect(fake.calls).not.toContain(`destroy ${x.id}`);
    expect(fake.states.get(x.id)).toBe('running');
    expect(fake.roots.has(x.id)).toBe(true);
  });

  it("leaves a sliver the memory watchdog froze alone until the watchdog thaws it or its users act", async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const released: string[] = [];
    r.onHoldReleased = (id, thawed) => released.push(`${id} ${thawed}`);
    const a = { ...sliver('site_a'), thaw_seq: 0 };
    const b = { ...sliver('site_b'), thaw_seq: 0 };
    await r.reconcile(doc([a, b]));
    expect((await r.pressureCandidates()).map((c) => c.id).sort()).toEqual([a.id, b.id].sort());
    const hold = { frozen_at: new Date().toISOString(), reason: 'test', node_psi_some_avg10: 40, sliver_psi_some_avg10: 30, thaw_psi_some: 10, freeze_timeout_seconds: 60 };
    await r.watchdogFreeze(a.id, hold);
    await r.watchdogFreeze(b.id, hold);
    // Passes with the same document leave both frozen, and the registry sees who froze them.
    await r.reconcile(doc([a, b]));
    expect(fake.states.get(a.id)).toBe('frozen');
    expect((await r.pressureCandidates())).toEqual([]);
    expect((await r.observed()).find((o) => o.id === a.id)).toMatchObject({ state: 'stopped', watchdog_hold: hold });
    // The watchdog thaws a; b's users thaw it themselves (thaw_seq): b is let go and thawed by the pass.
    await r.watchdogThaw(a.id);
    await r.reconcile(doc([a, { ...b, thaw_seq: 1 }]));
    expect(fake.states.get(a.id)).toBe('running');
    expect(fake.states.get(b.id)).toBe('running');
    expect(released).toEqual([`${b.id} true`]);
    expect((await r.observed()).find((o) => o.id === b.id)).toMatchObject({ state: 'running', watchdog_hold: null });
    // Frozen by the watchdog, then by its users: the watchdog's thaw leaves it frozen.
    await r.watchdogFreeze(a.id, hold);
    await r.reconcile(doc([{ ...a, desired: 'frozen' }, { ...b, thaw_seq: 1 }]));
    expect(released).toEqual([`${b.id} true`, `${a.id} false`]);
    await r.watchdogThaw(a.id);
    expect(fake.states.get(a.id)).toBe('frozen');
  });

  it('builds new slivers, then leaves settled ones alone: no state probe for a new document, one for all of them in a whole pass', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const slivers = Array.from({ length: 20 }, (_, i) => sliver(`site_s${i}`));
    await r.reconcile(doc(slivers));
    expect([...fake.states.values()].every((s) => s === 'running')).toBe(true);
    expect(fake.calls.filter((c) => c.startsWith('start '))).toHaveLength(20);

    fake.calls.length = 0;
    const added = sliver('site_new');
    await r.reconcile(doc([...slivers, added]));
    const perSliver = fake.calls.filter((c) => / [0-9a-f-]{36}$/.test(c));
    expect(perSliver.every((c) => c.endsWith(added.id))).toBe(true);
    // A pass for a new document lists the instances and probes no state of the settled ones.
    expect(fake.calls.filter((c) => c === 'states')).toHaveLength(0);
    fake.calls.length = 0;
    await r.reconcile(doc([...slivers, added]), { whole: true });
    expect(fake.calls).toEqual(['states', 'listRoots']);
  });

  it('works again on a settled sliver whose instance is no longer in its desired state', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const s = sliver('site_crash');
    await r.reconcile(doc([s]));
    fake.states.set(s.id, 'stopped'); // its init died
    fake.calls.length = 0;
    // A pass for a new document probes only what it works on; the clock's report shows the
    // death, a change's report repeats it, and the whole pass (at least once a minute) restarts it.
    await r.reconcile(doc([s]));
    expect(fake.calls).not.toContain(`start ${s.id}`);
    expect((await r.observed())[0]).toMatchObject({ state: 'failed', error: expect.stringMatching(/^the container stopped by itself/) });
    expect((await r.observed({ fresh: false }))[0]).toMatchObject({ state: 'failed' });
    await r.reconcile(doc([s]), { whole: true });
    expect(fake.calls).toContain(`start ${s.id}`);
    expect((await r.observed({ fresh: false }))[0]).toMatchObject({ state: 'running', error: null });
  });

  it('after a restart leaves alone what the same code settled, works on a sliver the host no longer shows settled, and on every sliver once under new code', async () => {
    const fake = recordingDrivers(dir);
    const started = (code: string) => new Reconciler({ drivers: fake.drivers, ledger: new Ledger(dir), images: new ImageIndex(dir), log: createLogger({ name: 't', level: 'silent' }), maxSlots: 1000, code });
    const [a, b] = [sliver('site_restart'), sliver('site_restart')];
    const ledger = new Ledger(dir);
    await new Reconciler({ drivers: fake.drivers, ledger, images: new ImageIndex(dir), log: createLogger({ name: 't', level: 'silent' }), maxSlots: 1000, code: 'v1' }).reconcile(doc([a, b]));
    ledger.flush(); // as the agent's stop does
    expect(new Ledger(dir).all().every((r) => typeof r.done === 'string')).toBe(true);
    fake.states.set(b.id, 'stopped'); // died while the agent was down
    fake.calls.length = 0;
    const again = started('v1');
    await again.reconcile(doc([a, b]));
    expect(fake.calls.filter((c) => c.endsWith(a.id))).toEqual([]);
    expect(fake.calls).toContain(`start ${b.id}`);
    expect(await again.observed()).toEqual(expect.arrayContaining([expect.objectContaining({ id: a.id, state: 'running' }), expect.objectContaining({ id: b.id, state: 'running' })]));
    // A changed document is worked on as before.
    fake.calls.length = 0;
    await again.reconcile(doc([{ ...a, restart_seq: 1 }, b]));
    expect(fake.calls).toContain(`stop ${a.id}`);
    // Upgraded: the new code re-checks each sliver once, then leaves them alone again.
    fake.calls.length = 0;
    const upgraded = started('v2');
    await upgraded.reconcile(doc([{ ...a, restart_seq: 1 }, b]));
    expect(fake.calls).toEqual(expect.arrayContaining([`define ${a.id}`, `define ${b.id}`]));
    fake.calls.length = 0;
    await upgraded.reconcile(doc([{ ...a, restart_seq: 1 }, b]), { whole: true });
    expect(fake.calls.filter((c) => c.endsWith(a.id) || c.endsWith(b.id))).toEqual([]);
  });

  it('converges on the live limits, not on its own last pass: a drifted limit is written, a refused one stays the sliver\'s error until it holds', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const s = sliver('site_limits');
    await r.reconcile(doc([s]));
    // As after a kill between the config and the cgroups: the host holds an old limit.
    fake.live.set(s.id, 32);
    fake.calls.length = 0;
    // A pass for a new document reads no limit of a sliver it does not change: the whole pass does.
    await r.reconcile(doc([s]));
    expect(fake.calls).not.toContain(`applyLimits ${s.id}`);
    await r.reconcile(doc([s]), { whole: true });
    expect(fake.calls).toContain(`applyLimits ${s.id}`);
    expect(fake.live.get(s.id)).toBe(64);
    expect((await r.observed())[0]).toMatchObject({ state: 'running', error: null });
    expect(r.retriesPending()).toBe(0);

    // Lowered below what the sliver holds: it runs on, with the refusal as its error, pass after pass.
    fake.holds.set(s.id, 48);
    const lower = { ...s, resources: { ...s.resources, memory_mb: 40 } };
    for (let pass = 0; pass < 2; pass++) {
      fake.calls.length = 0;
      await r.reconcile(doc([lower]));
      expect(fake.calls).toContain(`applyLimits ${s.id}`);
      expect((await r.observed())[0]).toMatchObject({ state: 'running', error: expect.stringMatching(/memory limit 40 MiB not applied, the sliver holds 48 MiB/) });
      expect(r.retriesPending()).toBe(1);
    }
    // It frees memory: the next pass applies the limit and the error goes.
    fake.holds.set(s.id, 16);
    await r.reconcile(doc([lower]));
    expect(fake.live.get(s.id)).toBe(40);
    expect((await r.observed())[0]).toMatchObject({ state: 'running', error: null });
    expect(r.retriesPending()).toBe(0);
    fake.calls.length = 0;
    await r.reconcile(doc([lower]));
    expect(fake.calls.filter((c) => c.endsWith(s.id))).toEqual([]); // settled again: no work
  });

  it("resets for the watchdog: kills, then starts again, from a fresh root only when the slice asked to be restored", async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const keep = sliver('site_keep');
    const fresh = { ...sliver('site_fresh'), memory_reset: 'restore' as const };
    await r.reconcile(doc([keep, fresh]));
    fake.calls.length = 0;
    expect(await r.memoryReset(keep.id)).toBe('restart');
    expect(await r.memoryReset(fresh.id)).toBe('restore');
    await r.reconcile(doc([keep, fresh])); // waits for both queues
    const of = (id: string) => fake.calls.filter((c) => c.endsWith(id)).map((c) => c.split(' ')[0]);
    expect(of(keep.id)).toContain('kill');
    expect(of(keep.id)).not.toContain('deleteRoot');
    expect(of(keep.id).lastIndexOf('start')).toBeGreaterThan(of(keep.id).indexOf('kill'));
    expect(of(fresh.id).slice(0, 3)).toEqual(['kill', 'destroy', 'deleteRoot']);
    expect(of(fresh.id)).toContain('createRoot');
    expect(fake.states.get(keep.id)).toBe('running');
    expect(fake.states.get(fresh.id)).toBe('running');
  });

  it('does not make other slivers wait for a slow one, and works on at most `concurrency` at once', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers, 3);
    const slow = sliver('site_slow');
    let release!: () => void;
    fake.gates.set(slow.id, new Promise<void>((res) => (release = res)));
    const others = Array.from({ length: 10 }, (_, i) => sliver(`site_fast${i}`));
    const pass = r.reconcile(doc([slow, ...others]));
    // Every fast sliver gets built while the slow one's root is still being made.
    for (let i = 0; i < 200 && others.some((o) => fake.states.get(o.id) !== 'running'); i++) await new Promise((res) => setTimeout(res, 10));
    expect(others.map((o) => fake.states.get(o.id))).toEqual(others.map(() => 'running'));
    expect(fake.states.get(slow.id)).toBeUndefined();
    expect(fake.maxBusy()).toBeLessThanOrEqual(3);
    expect(fake.maxBusy()).toBeGreaterThan(1);
    release();
    await pass;
    expect(fake.states.get(slow.id)).toBe('running');
  });

  it('applies the nftables table once for the builds that wait on it together, and starts no sliver before an apply that holds it', async () => {
    const fake = recordingDrivers(dir);
    const applies: string[][] = [];
    Object.assign(fake.drivers.network, {
      apply: async (specs: Array<{ id: string }>) => {
        await new Promise((res) => setTimeout(res, 30));
        applies.push(specs.map((s) => s.id));
        fake.calls.push(`applied ${specs.map((s) => s.id).join(' ')}`);
      },
    });
    const r = reconciler(fake.drivers, 6);
    const first = sliver('site_first');
    await r.reconcile(doc([first]));
    applies.length = 0;
    const burst = Array.from({ length: 12 }, (_, i) => sliver(`site_burst${i}`));
    await r.reconcile(doc([first, ...burst]));
    expect(burst.map((s) => fake.states.get(s.id))).toEqual(burst.map(() => 'running'));
    // One apply under way and one queued at most: the 12 builds share a few.
    expect(applies.length).toBeGreaterThan(0);
    expect(applies.length).toBeLessThanOrEqual(4);
    expect(applies.at(-1)!.sort()).toEqual([first, ...burst].map((s) => s.id).sort());
    for (const s of burst) {
      const started = fake.calls.indexOf(`start ${s.id}`);
      const applied = fake.calls.findIndex((c, i) => i < started && c.startsWith('applied ') && c.split(' ').includes(s.id));
      expect(applied, `an apply holding ${s.id} before its start`).toBeGreaterThan(-1);
    }
  });

  it('works on each sliver once through a burst of documents: a queued build takes the newest document, no copy is queued per document', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers, 1);
    const slow = sliver('site_slow');
    let release!: () => void;
    fake.gates.set(slow.id, new Promise<void>((res) => (release = res)));
    // As in a burst: document after document, each with one sliver more, while the first build waits.
    const slivers = [slow];
    const passes = [r.reconcile(doc([...slivers]))];
    for (let i = 0; i < 8; i++) {
      slivers.push(sliver(`site_b${i}`));
      passes.push(r.reconcile(doc([...slivers])));
    }
    // The last sliver changes while it waits: its one build is of the newest version.
    const last = { ...slivers.at(-1)!, resources: { ...slivers.at(-1)!.resources, memory_mb: 96 } };
    passes.push(r.reconcile(doc([...slivers.slice(0, -1), last])));
    await new Promise((res) => setTimeout(res, 50));
    release();
    await Promise.all(passes);
    for (const s of slivers) {
      expect(fake.states.get(s.id)).toBe('running');
      // One build each, and no probe of a sliver already built by an earlier copy of its job.
      expect(fake.calls.filter((c) => c === `createRoot ${s.id}`)).toHaveLength(1);
      expect(fake.calls.filter((c) => c === `state ${s.id}`)).toHaveLength(1); // the build's own, before its start
    }
    expect(fake.defined.get(last.id)).toBe(96);
    expect((await r.observed()).find((o) => o.id === last.id)).toMatchObject({ state: 'running', error: null });
  });

  it("reports with the figures as last read unless fresh: a change's report reads only a new sliver's cgroups", async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const slivers = Array.from({ length: 5 }, (_, i) => sliver(`site_f${i}`));
    await r.reconcile(doc(slivers));
    await r.observed();
    expect(fake.figuresRead.sort()).toEqual(slivers.map((s) => s.id).sort());
    fake.figuresRead.length = 0;
    const added = sliver('site_fnew');
    await r.reconcile(doc([...slivers, added]));
    const seen = await r.observed({ fresh: false });
    expect(fake.figuresRead).toEqual([added.id]);
    expect(seen.every((o) => o.memory_bytes === 1 << 20 && o.cpu_seconds === 1.5)).toBe(true);
    fake.figuresRead.length = 0;
    await r.observed();
    expect(fake.figuresRead).toHaveLength(6);
  });

  it('undoes a new sliver that fails part-way: nothing stays on the host but its ledger record, and the next pass starts over', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const s = sliver('site_broken');
    fake.failStart.add(s.id);
    await r.reconcile(doc([s]));
    const of = fake.calls.filter((c) => c.endsWith(s.id)).map((c) => c.split(' ')[0]);
    expect(of.slice(0, 7)).toEqual(['createRoot', 'attach', 'limit', 'define', 'state', 'start', 'destroy']);
    expect(of.slice(7).sort()).toEqual(['deleteRoot', 'detach']); // root and link were made side by side
    expect(fake.roots.has(s.id)).toBe(false);
    expect(fake.states.has(s.id)).toBe(false);
    expect(new Ledger(dir).get(s.id)).toMatchObject({ slice: 'site_broken' });
    expect(await r.observed()).toEqual([expect.objectContaining({ id: s.id, state: 'failed', error: 'lxc-start failed' })]);
    fake.failStart.clear();
    await r.reconcile(doc([s]));
    expect(fake.states.get(s.id)).toBe('running');
    expect(fake.roots.has(s.id)).toBe(true);
  });
});

describe('a sliver waiting for its image', () => {
  it("shows the fetch's progress as it is when reported, not as it was at the last pass", async () => {
    const fake = recordingDrivers(dir);
    const fetch = { state: 'fetching', error: null as string | null, progress: 0.1 };
    const fetcher = { want: () => undefined, seed: () => undefined, state: () => ({ ...fetch }) };
    const r = new Reconciler({ drivers: fake.drivers, ledger: new Ledger(dir), images: new ImageIndex(dir), log: createLogger({ name: 't', level: 'silent' }), maxSlots: 1000, fetcher });
    const s = { ...sliver('site_wait'), image: { name: 'big', sha256: 'b'.repeat(64), magnet: 'magnet:?xt=urn:btih:' + 'cd'.repeat(20), web_seed: null } };
    await r.reconcile(doc([s]));
    expect(await r.observed()).toEqual([{ id: s.id, state: 'provisioning', error: 'fetching image big (10%)' }]);
    fetch.progress = 0.75; // no pass since
    expect(await r.observed()).toEqual([{ id: s.id, state: 'provisioning', error: 'fetching image big (75%)' }]);
    Object.assign(fetch, { state: 'failed', error: 'no data for image big from peers in 20 s, at 75 %' });
    expect(await r.observed()).toEqual([{ id: s.id, state: 'failed', error: 'image big: no data for image big from peers in 20 s, at 75 %' }]);
  });
});

describe('a desired-state document with hostile values', () => {
  const hostile: Array<[string, (s: DesiredSliver) => unknown, RegExp]> = [
    ['a slice name with path characters', (s) => ({ ...s, slice: '../../etc_x' }), /slice name "..\/..\/etc_x" is not a slice name/],
    ['a slice name with a newline', (s) => ({ ...s, slice: 'site_a\nroot' }), /is not a slice name/],
    ['a huge key list', (s) => ({ ...s, keys: Array.from({ length: 5000 }, () => KEY) }), /5000 ssh keys, more than 4096/],
    ['a key that smuggles authorized_keys options', (s) => ({ ...s, keys: [`command="sh" ${KEY}`] }), /an ssh key is not one OpenSSH public key/],
    ['a key with a second line', (s) => ({ ...s, keys: [`${KEY}\n${KEY}`] }), /an ssh key is not one OpenSSH public key/],
    ['ports outside the window', (s) => ({ ...s, ports: { first: 1024, last: 1030 } }), /ports 1024-1030 are not within the node's port window 20000-29999/],
    ['ports the wrong way round', (s) => ({ ...s, ports: { first: 20020, last: 20010 } }), /are not within/],
    ['an image name that is a path', (s) => ({ ...s, image: { ...s.image, name: '../../../etc/shadow' } }), /image name "..\/..\/..\/etc\/shadow" is not an image name/],
    ['a sha256 that is a path', (s) => ({ ...s, image: { ...s.image, sha256: '../x' } }), /image sha256 is not 64 hex digits/],
    ['a web seed that is a file', (s) => ({ ...s, image: { ...s.image, web_seed: 'file:///etc/shadow' } }), /web_seed is not an http\(s\) URL/],
    ['absurd memory', (s) => ({ ...s, resources: { ...s.resources, memory_mb: 1 << 20 } }), /memory_mb 1048576 is more than this node has/],
    ['negative memory', (s) => ({ ...s, resources: { ...s.resources, memory_mb: -1 } }), /\/resources\/memory_mb/],
    ['an absurd cpu cap', (s) => ({ ...s, resources: { ...s.resources, cpu_cap_percent: 12_800 } }), /cpu_cap_percent 12800 is more than/],
    ['a kind the node does not know', (s) => ({ ...s, kind: 'docker' }), /\/kind/],
    ['a string where a number goes', (s) => ({ ...s, restart_seq: '1; reboot' }), /\/restart_seq/],
  ];
  const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhostileinputtestkeyAAAAAAAAAAAAAAAAAAAAA exp@site';

  it.each(hostile)('refuses %s before any host command, as that sliver\'s error, and builds the others', async (_what, spoil, why) => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const good = sliver('site_good');
    const bad = sliver('site_bad');
    await r.reconcile(doc([spoil(bad) as DesiredSliver, good]));
    expect(fake.calls.filter((c) => c.includes(bad.id))).toEqual([]);
    expect(fake.calls).toContain(`start ${good.id}`);
    const seen = await r.observed();
    const mine = seen.find((o) => o.id === bad.id);
    expect(mine?.state).toBe('failed');
    expect(mine?.error).toMatch(/^refused by this node: /);
    expect(mine?.error).toMatch(why);
    expect(mine?.error).not.toMatch(/\n/);
    expect(seen.find((o) => o.id === good.id)?.state).toBe('running');
  });

  it('leaves a running sliver as it is when its next document is hostile, and goes on once it is sound again', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const s = sliver('site_keep');
    await r.reconcile(doc([s]));
    fake.calls.length = 0;
    await r.reconcile(doc([{ ...s, slice: 'site_keep/../../x', restart_seq: 1 }]));
    expect(fake.calls.filter((c) => c.includes(s.id))).toEqual([]);
    expect(fake.states.get(s.id)).toBe('running');
    expect((await r.observed())[0]).toMatchObject({ id: s.id, state: 'failed', error: expect.stringMatching(/^refused by this node: slice name/) });
    await r.reconcile(doc([{ ...s, restart_seq: 1 }]));
    expect((await r.observed())[0]).toMatchObject({ id: s.id, state: 'running', error: null });
  });

  it('refuses two slivers on the same ports, and a sliver listed twice', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const a = sliver('site_a');
    const b = { ...sliver('site_b'), ports: a.ports };
    await r.reconcile(doc([a, b, { ...a, slice: 'site_twice' }]));
    const seen = await r.observed();
    expect(seen.find((o) => o.id === b.id)?.error).toMatch(/overlap those of sliver/);
    expect(seen.find((o) => o.id === a.id)?.state).toBe('failed');
    expect(fake.calls.filter((c) => c.includes(b.id))).toEqual([]);
  });

  it('refuses a document that is not one before any host command', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    for (const garbage of [null, [], 'text', { slivers: 'x' }, { ...doc([]), port_window: { first: 30000, last: 20000 } }, { ...doc([]), address: '$(reboot)' }]) {
      await r.reconcile(garbage as DesiredState).catch(() => undefined);
    }
    expect(fake.calls.filter((c) => c !== 'listRoots' && c !== 'states')).toEqual([]);
    await expect(r.reconcile({ slivers: 'x' } as unknown as DesiredState)).rejects.toThrow('desired state refused: slivers is not a list');
  });
});

describe('what a pass probes', () => {
  it('a pass for a new document lists no links of the whole node; the first pass and again() do', async () => {
    const fake = recordingDrivers(dir);
    let listings = 0;
    Object.assign(fake.drivers.network, { listAttached: async () => { listings++; return []; } });
    const r = reconciler(fake.drivers);
    const a = sliver('site_a');
    await r.reconcile(doc([a]));
    expect(listings).toBe(1);
    const b = sliver('site_b');
    await r.reconcile(doc([a, b]));
    expect(listings).toBe(1);
    expect(fake.states.get(b.id)).toBe('running');
    await r.again();
    expect(listings).toBe(2);
  });
});

describe('a warm pool (warm-pool.ts)', () => {
  it('keeps spares apart from the slivers, and hands one out without building or starting it', async () => {
    const fake = recordingDrivers(dir);
    const r = new Reconciler({ drivers: fake.drivers, ledger: new Ledger(dir), images: new ImageIndex(dir), log: createLogger({ name: 't', level: 'silent' }), maxSlots: 1000, warmPool: { image: 'tiny', size: 2 } });
    await r.reconcile(doc([]));
    await r.pool!.fill();
    const spares = r.pool!.spares();
    expect(spares).toHaveLength(2);
    expect(spares.every((s) => s.image === 'tiny' && s.image_sha256 === SHA && s.kind === 'lxc' && fake.states.get(s.id) === 'running')).toBe(true);
    // Later passes leave them up; they are neither reported nor watched as slivers.
    await r.reconcile(doc([]));
    expect(fake.calls.filter((c) => c.startsWith('destroy') || c.startsWith('deleteRoot'))).toEqual([]);
    expect(await r.observed()).toEqual([]);
    expect(r.slivers()).toEqual([]);
    // The registry gives a new sliver a spare's id: adopted as it runs, provisioned for its slice.
    const s = { ...sliver('site_a'), id: spares[0]!.id };
    fake.calls.length = 0;
    await r.reconcile(doc([s]));
    expect(fake.calls).not.toContain(`start ${s.id}`);
    expect(fake.calls).toContain(`define ${s.id}`);
    expect((await r.observed()).map((o) => [o.id, o.state])).toEqual([[s.id, 'running']]);
    expect(readFileSync(join(dir, 'roots', s.id, 'etc', 'slicename'), 'utf8')).toBe('site_a\n');
    expect(r.slivers()).toEqual([{ id: s.id, slice: 'site_a' }]);
    // Refilled behind it with a new spare; the one handed out is never offered again.
    await r.pool!.fill();
    const now = r.pool!.spares().map((x) => x.id);
    expect(now).toHaveLength(2);
    expect(now).not.toContain(s.id);
    expect(now).toContain(spares[1]!.id);
    await r.close();
    // An agent started with no pool any more removes the spares the earlier one left.
    const without = new Reconciler({ drivers: fake.drivers, ledger: new Ledger(dir), images: new ImageIndex(dir), log: createLogger({ name: 't', level: 'silent' }), maxSlots: 1000 });
    expect(without.pool).toBeNull();
    await without.reconcile(doc([s]));
    await without.close();
    for (const id of now) {
      expect(fake.states.has(id)).toBe(false);
      expect(fake.roots.has(id)).toBe(false);
    }
    expect(new Ledger(dir).all().map((x) => x.id)).toEqual([s.id]);
    expect(fake.states.get(s.id)).toBe('running');
  });
});
