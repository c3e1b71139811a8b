// The front door's count of failed logins: free at first, slower after, bounded in memory.
import { describe, expect, it } from 'vitest';
import { FailureCounter } from '../src/frontdoor/throttle.js';

describe('FailureCounter', () => {
  it('lets a few failures go at once, then slows a source down up to a ceiling', () => {
    const c = new FailureCounter();
    const delays = Array.from({ length: 40 }, () => c.fail('192.0.2.1', 1000));
    expect(delays.slice(0, 5)).toEqual([0, 0, 0, 0, 0]);
    expect(delays[5]).toBeGreaterThan(0);
    for (let i = 6; i < delays.length; i++) expect(delays[i]).toBeGreaterThanOrEqual(delays[i - 1]!);
    expect(delays.at(-1)).toBe(5000);
    // Other sources are not slowed by it; a good login forgets it.
    expect(c.fail('192.0.2.2', 1000)).toBe(0);
    c.forget('192.0.2.1');
    expect(c.fail('192.0.2.1', 1000)).toBe(0);
  });

  it('forgets a source that kept quiet for ten minutes', () => {
    const c = new FailureCounter();
    for (let i = 0; i < 20; i++) c.fail('192.0.2.1', 0);
    expect(c.fail('192.0.2.1', 10 * 60_000 + 1)).toBe(0);
  });

  it('keeps at most maxSources sources, dropping the stalest', () => {
    const c = new FailureCounter(1000);
    for (let i = 0; i < 50_000; i++) c.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, i);
    expect(c.size).toBe(1000);
  });
});
