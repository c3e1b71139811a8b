// The scheduled full pull of the desired state: every 5 minutes, at each node's own second of them,
// so that a fleet whose clocks NTP keeps in step does not pull all at once.
import { randomUUID } from 'node:crypto';
import cron from 'node-cron';
import { describe, expect, it } from 'vitest';
import { fullPullCronOf } from '../src/sync.js';

describe('the full pull schedule', () => {
  it("runs every 5 minutes at the node's own second, the same for the same node, spread over a fleet", () => {
    const id = randomUUID();
    expect(fullPullCronOf(id)).toBe(fullPullCronOf(id));
    const minutes = new Array<number>(5).fill(0);
    const seconds = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const expr = fullPullCronOf(randomUUID());
      expect(cron.validate(expr)).toBe(true);
      // As node-cron reads it: the next run within 5 minutes, at the second and the minute (of
      // every fifth) that the expression names.
      const [second, minute] = expr.split(' ').map((f) => Number.parseInt(f, 10));
      const task = cron.schedule(expr, () => undefined);
      try {
        const next = task.getNextRun()!;
        expect(next.getTime() - Date.now()).toBeLessThanOrEqual(300_000);
        expect([next.getSeconds(), next.getMinutes() % 5]).toEqual([second, minute]);
        minutes[minute!]!++;
        seconds.add(second! + 60 * minute!);
      } finally {
        task.stop();
      }
    }
    // A thousand nodes over the 300 seconds of the period: every minute of it holds 140-260.
    for (const m of minutes) {
      expect(m).toBeGreaterThan(140);
      expect(m).toBeLessThan(260);
    }
    expect(seconds.size).toBeGreaterThan(250);
  });
});
