import { describe, expect, it } from 'vitest';
import { nextTurn, turnDue } from './turns.js';

describe('turns', () => {
  it('is due every `every` items, where a timer due meanwhile runs', async () => {
    const due = turnDue(3);
    let fired = false;
    const seen: boolean[] = [];
    setImmediate(() => (fired = true));
    for (let i = 1; i <= 4; i++) {
      if (due()) await nextTurn();
      seen.push(fired);
    }
    // Items 1 and 2 run before the timer; the 3rd takes a turn, in which it fires.
    expect(seen).toEqual([false, false, true, true]);
  });
});
