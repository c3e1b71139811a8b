// Accounting's node-wide reads: which reports read the pool's disk usage and the wire counters
// (stand-ins count the calls; the drivers' own reads are tested against the host elsewhere).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '@planetlite/core';
import type { NetworkDriver } from '@planetlite/network';
import type { StorageDriver } from '@planetlite/storage';
import { Accounting } from '../src/accounting.js';

afterEach(() => {
  vi.useRealTimers();
});

function accounting() {
  const calls = { disk: 0, net: 0 };
  const storage = { usageAll: async () => { calls.disk++; return new Map([['s1', { exclusiveBytes: 4096 * calls.disk, referencedBytes: 0 }]]); } } as unknown as StorageDriver;
  const network = { counters: async () => { calls.net++; return new Map([['s1', { rxBytes: calls.net, txBytes: calls.net }]]); } } as unknown as NetworkDriver;
  return { calls, acc: new Accounting({ storage, network, log: createLogger({ name: 'test', level: 'silent' }) }) };
}

describe('accounting, node-wide figures', () => {
  it("reads disk usage and counters only for the clock's reports; a change's report takes them as last read", async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const { calls, acc } = accounting();
    // Before any clock report: nothing read, nothing claimed.
    expect(await acc.read(false)).toEqual({ net: new Map(), disk: new Map() });
    expect(calls).toEqual({ disk: 0, net: 0 });
    const first = await acc.read(true);
    expect(calls).toEqual({ disk: 1, net: 1 });
    expect(first.disk.get('s1')).toBe(4096);
    // A minute later the disk figures are due, yet a change's report (the pool's qgroups need a
    // commit) does not read them.
    vi.setSystemTime(Date.now() + 61_000);
    const partial = await acc.read(false);
    expect(calls).toEqual({ disk: 1, net: 1 });
    expect(partial).toEqual(first);
    await acc.read(true);
    expect(calls).toEqual({ disk: 2, net: 2 });
    // Within the minute, a clock report reads the counters but not the disk again.
    await acc.read(true);
    expect(calls).toEqual({ disk: 2, net: 3 });
  });
});
