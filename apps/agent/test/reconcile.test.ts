// The shape of a reconcile pass, on drivers that only record what they are asked (the real
// drivers are exercised end to end in test/e2e): a settled sliver costs no host work, a slow
// sliver holds up no other, and no more than the concurrency limit are worked on at once.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { InstanceError, type InstanceDriver, type InstanceLimits, type InstanceState } from '@planetlite/instance';
import type { NetworkDriver } from '@planetlite/network';
import type { StorageDriver } from '@planetlite/storage';
import { Reconciler } from '../src/reconcile.js';
import { Ledger } from '../src/ledger.js';
import { ImageIndex } from '../src/images.js';

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
  let busy = 0;
  let maxBusy = 0;
  const note = (c: string) => calls.push(c);
  const storage = {
    name: 'fake', capabilities: { snapshots: true, quotas: true },
    hasImage: async () => true,
    listRoots: async () => { note('listRoots'); return [...roots]; },
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
    define: async (s: { id: string }) => { note(`define ${s.id}`); if (!states.has(s.id)) states.set(s.id, 'stopped'); },
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
    destroy: async (id: string) => { note(`destroy ${id}`); states.delete(id); },
    list: async () => [...states.keys()],
    memoryBytes: async () => 1 << 20,
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
  return { drivers: { storage, instances: { lxc: instance }, network }, calls, states, gates, failStart, roots, live, holds, maxBusy: () => maxBusy };
}

function sliver(slice: string): DesiredSliver {
  return {
    id: randomUUID(), slice, kind: 'lxc', desired: 'running', restart_seq: 0, reset_seq: 0,
    image: { name: 'tiny', sha256: SHA, magnet: null, web_seed: null },
    resources: { memory_mb: 64, cpu_shares: 1024, disk_mb: 64, net_kbps: 1000 }, memory_reset: 'restart',
    ports: { first: 20000, last: 20009 }, expires_at: new Date(Date.now() + 86_400_000).toISOString(), keys: [],
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
  it('builds new slivers, then leaves settled ones alone: one state probe for all of them and nothing else', async () => {
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
    expect(fake.calls.filter((c) => c === 'states')).toHaveLength(1);
  });

  it('works again on a settled sliver whose instance is no longer in its desired state', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const s = sliver('site_crash');
    await r.reconcile(doc([s]));
    fake.states.set(s.id, 'stopped'); // its init died
    fake.calls.length = 0;
    await r.reconcile(doc([s]));
    expect(fake.calls).toContain(`start ${s.id}`);
  });

  it('converges on the live limits, not on its own last pass: a drifted limit is written, a refused one stays the sliver\'s error until it holds', async () => {
    const fake = recordingDrivers(dir);
    const r = reconciler(fake.drivers);
    const s = sliver('site_limits');
    await r.reconcile(doc([s]));
    // As after a kill between the config and the cgroups: the host holds an old limit.
    fake.live.set(s.id, 32);
    fake.calls.length = 0;
    await r.reconcile(doc([s]));
    expect(fake.calls).toContain(`applyLimits ${s.id}`);
    expect(fake.live.get(s.id)).toBe(64);
    expect((await r.observed())[0]).toMatchObject({ state: 'running', error: null });
    expect(r.limitsPending()).toBe(0);

    // Lowered below what the sliver holds: it runs on, with the refusal as its error, pass after pass.
    fake.holds.set(s.id, 48);
    const lower = { ...s, resources: { ...s.resources, memory_mb: 40 } };
    for (let pass = 0; pass < 2; pass++) {
      fake.calls.length = 0;
      await r.reconcile(doc([lower]));
      expect(fake.calls).toContain(`applyLimits ${s.id}`);
      expect((await r.observed())[0]).toMatchObject({ state: 'running', error: expect.stringMatching(/memory limit 40 MiB not applied, the sliver holds 48 MiB/) });
      expect(r.limitsPending()).toBe(1);
    }
    // It frees memory: the next pass applies the limit and the error goes.
    fake.holds.set(s.id, 16);
    await r.reconcile(doc([lower]));
    expect(fake.live.get(s.id)).toBe(40);
    expect((await r.observed())[0]).toMatchObject({ state: 'running', error: null });
    expect(r.limitsPending()).toBe(0);
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
