// The error a running container sliver shows while nothing listens on its port 22: after a
// grace period from its start, read once per start while it listens, on every clock report while
// it does not.
import { describe, expect, it } from 'vitest';
import { createLogger } from '@planetlite/core';
import { SshdWatch } from '../src/sshd-watch.js';

const ID = '3f0c6f6e-2a49-4b8e-9a53-6f7f4b1d2c10';
const log = createLogger({ name: 't', level: 'silent' });

/** A driver whose answer the test sets, counting the reads. */
function driver(answer: boolean | null) {
  const d = { answer, reads: 0, listening: async (id: string, port: number) => (expect([id, port]).toEqual([ID, 22]), d.reads++, d.answer) };
  return d;
}

describe('SshdWatch', () => {
  it('reads nothing within the grace after a start', async () => {
    const w = new SshdWatch({ log, graceMs: 60_000 });
    const d = driver(false);
    w.started(ID);
    expect(await w.error(ID, d, true)).toBeNull();
    expect(d.reads).toBe(0);
  });

  it('shows the error while nothing listens, repeats it without reading, and drops it once sshd listens', async () => {
    const w = new SshdWatch({ log, graceMs: 0 });
    const d = driver(false);
    w.started(ID);
    const error = await w.error(ID, d, true);
    expect(error).toMatch(/^nothing listens on port 22 inside the sliver 0 s after its start: /);
    expect(error).toContain(`planetlite sliver log ${ID}`);
    expect(d.reads).toBe(1);
    // A report a change sends at once repeats the verdict; a clock report reads again.
    expect(await w.error(ID, d, false)).toBe(error);
    expect(d.reads).toBe(1);
    expect(await w.error(ID, d, true)).toBe(error);
    expect(d.reads).toBe(2);
    d.answer = true;
    expect(await w.error(ID, d, true)).toBeNull();
    // Found listening: not read again until the next start.
    d.answer = false;
    expect(await w.error(ID, d, true)).toBeNull();
    expect(d.reads).toBe(3);
    w.started(ID);
    expect(await w.error(ID, d, true)).toMatch(/^nothing listens/);
    expect(d.reads).toBe(4);
  });

  it('shows nothing when the host cannot tell, or the driver cannot look (a VM)', async () => {
    const w = new SshdWatch({ log, graceMs: 0 });
    w.started(ID);
    expect(await w.error(ID, driver(null), true)).toBeNull();
    expect(await w.error(ID, { listening: async () => { throw new Error('gone'); } }, true)).toBeNull();
    expect(await w.error(ID, {}, true)).toBeNull();
    expect(await w.error(ID, null, true)).toBeNull();
  });

  it('counts the grace from the first sight of a sliver this process did not start', async () => {
    const w = new SshdWatch({ log, graceMs: 50 });
    const d = driver(false);
    expect(await w.error(ID, d, true)).toBeNull();
    expect(d.reads).toBe(0);
    await new Promise((r) => setTimeout(r, 60));
    expect(await w.error(ID, d, true)).toMatch(/^nothing listens/);
  });

  it('forgets a sliver that left the node', async () => {
    const w = new SshdWatch({ log, graceMs: 50 });
    const d = driver(false);
    w.started(ID);
    await new Promise((r) => setTimeout(r, 60));
    expect(await w.error(ID, d, true)).not.toBeNull();
    w.keepOnly(new Set());
    // Seen again as new: its grace starts over, and nothing is shown meanwhile.
    expect(await w.error(ID, d, false)).toBeNull();
    expect(await w.error(ID, d, true)).toBeNull();
    expect(d.reads).toBe(1);
  });
});
