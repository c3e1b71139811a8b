// Out of room: which failures a sliver shows with their code and the agent retries without a new
// document (faults.ts), and the OOM-kill events (oom.ts), on given errors and counts.
import { describe, expect, it } from 'vitest';
import type { NodeEventCreate } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { CommandError } from '@planetlite/host';
import type { InstanceDriver } from '@planetlite/instance';
import { isTransient, keysFault, provisionFault, sliverError } from '../src/faults.js';
import { OomWatch } from '../src/oom.js';

const log = createLogger({ name: 'test', level: 'silent' });
const ROOT = '/var/lib/planetlite/pool/slivers/0f8fad5b-d9cb-469f-a165-70867728950e';
const enospc = Object.assign(new Error("ENOSPC: no space left on device, open '/x/etc/slicename'"), { code: 'ENOSPC' });

describe('failures for want of room', () => {
  it('an ENOSPC while provisioning is the pool full, named, shown with its code and retried', () => {
    const err = provisionFault(enospc, ROOT);
    expect(isTransient(err)).toBe(true);
    expect(sliverError(err)).toBe('pool_full: the storage pool at /var/lib/planetlite/pool is full (no space left on device) while writing /etc/slicename, the keys and the host key into a new sliver root; free space in it or grow it; retried every few seconds');
  });

  it('new keys refused by the sliver quota are its disk full; a full pool is the pool; anything else stays as it is', () => {
    const quota = new CommandError('lxc-attach', ['-n', 'sl-x'], 1, 'sh: can\'t create /root/.ssh/authorized_keys.new: Disk quota exceeded\n');
    expect(sliverError(keysFault(quota, 32, ROOT))).toBe("sliver_disk_full: the sliver's disk (its quota of 32 MiB) is full: its new ssh keys could not be written into it; they are once it has room; retried every few seconds");
    const pool = new CommandError('lxc-attach', ['-n', 'sl-x'], 1, 'cat: write error: No space left on device\n');
    expect(sliverError(keysFault(pool, 32, ROOT))).toMatch(/^pool_full: the storage pool at \/var\/lib\/planetlite\/pool is full/);
    const other = new CommandError('lxc-attach', ['-n', 'sl-x'], 1, 'lxc-attach: failed to get init pid\n');
    expect(keysFault(other, 32, ROOT)).toBe(other);
    expect(isTransient(other)).toBe(false);
    expect(sliverError(other)).toBe(other.message);
  });
});

describe('OOM kills in a sliver', () => {
  const watch = (counts: Map<string, number | null>, events: NodeEventCreate[]) =>
    new OomWatch({
      slivers: () => [...counts.keys()].map((id) => ({ id, slice: `s_${id}` })),
      driverOf: () => ({ oomKills: async (id: string) => counts.get(id) ?? null, memoryBytes: async () => 60 * 2 ** 20 }) as unknown as InstanceDriver,
      limitMb: () => 64,
      emit: (ev) => events.push(ev),
      log,
    });

  it('tells each new kill once, from the first reading on; a count that went down (restarted) counts from 0', async () => {
    const counts = new Map<string, number | null>([['a', 3], ['b', null]]);
    const events: NodeEventCreate[] = [];
    const w = watch(counts, events);
    await w.check();
    expect(events).toEqual([]); // the first reading is the base
    counts.set('a', 5);
    await w.check();
    await w.check();
    expect(events).toEqual([{ type: 'sliver.oom_killed', sliver: 'a', data: { slice: 's_a', kills: 2, oom_kills_total: 5, memory_limit_mb: 64, memory_bytes: 60 * 2 ** 20, reason: '2 processes of this sliver killed by the kernel at its memory limit of 64 MiB; the sliver runs on' } }]);
    counts.set('a', 1);
    await w.check();
    expect(events.map((e) => e.data?.kills)).toEqual([2, 1]);
  });

  it('a sliver this agent started counts from 0: a kill before any reading is told, also after a stop and a start', async () => {
    const counts = new Map<string, number | null>([['a', null]]);
    const events: NodeEventCreate[] = [];
    const w = watch(counts, events);
    await w.check(); // claimed, not started yet
    w.started('a');
    counts.set('a', 1); // killed in its first seconds, before a report read its cgroup
    await w.check();
    expect(events.map((e) => [e.sliver, e.data?.kills, e.data?.oom_kills_total])).toEqual([['a', 1, 1]]);
    counts.set('a', null); // stopped: no cgroup
    await w.check();
    w.started('a');
    counts.set('a', 2);
    await w.check();
    expect(events.map((e) => [e.sliver, e.data?.kills, e.data?.oom_kills_total])).toEqual([['a', 1, 1], ['a', 2, 2]]);
  });

  it("drops a reading of the old cgroup begun before a start; a spare's kills are counted, not told, until it is handed out", async () => {
    let gate: Promise<void> | null = null;
    let release = () => undefined as void;
    const counts = new Map<string, number>([['a', 4], ['sp', 0]]);
    const listed = new Map<string, string | null>([['a', 's_a'], ['sp', null]]);
    const events: NodeEventCreate[] = [];
    const w = new OomWatch({
      slivers: () => [...listed].map(([id, slice]) => ({ id, slice })),
      driverOf: () => ({ oomKills: async (id: string) => { const n = counts.get(id)!; if (gate && id === 'a') await gate; return n; }, memoryBytes: async () => null }) as unknown as InstanceDriver,
      limitMb: () => 64,
      emit: (ev) => events.push(ev),
      log,
    });
    await w.check(); // a: base 4 (running before this agent came)
    gate = new Promise<void>((r) => (release = r));
    const reading = w.check(); // reads the old cgroup's 4, then waits
    await new Promise((r) => setImmediate(r));
    w.started('a'); // restarted meanwhile: a new cgroup
    w.started('sp');
    release();
    await reading;
    gate = null;
    counts.set('a', 5);
    counts.set('sp', 2);
    await w.check();
    expect(events.map((e) => [e.sliver, e.data?.kills])).toEqual([['a', 5]]);
    listed.set('sp', 's_sp'); // handed out: same id, same cgroup
    counts.set('sp', 3);
    await w.check();
    expect(events.map((e) => [e.sliver, e.data?.kills])).toEqual([['a', 5], ['sp', 1]]);
  });
});
