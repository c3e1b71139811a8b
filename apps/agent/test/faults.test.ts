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
});
