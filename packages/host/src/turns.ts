// Long synchronous loops (a pass over every sliver of a node reading cgroupfs) let other work in
// now and then: a change that arrives meanwhile does not wait for the whole node.
export { setImmediate as nextTurn } from 'node:timers/promises';

/** Items handled between two turns: about 20 ms of cgroupfs reads. */
export const TURN_EVERY = 100;

/**
 * Counts a loop's items: true on every `every`th, when the loop should `await nextTurn()`. Only
 * then does it await: an await per item would let other work in between every two items, which
 * the loops' callers do not expect.
 */
export function turnDue(every = TURN_EVERY): () => boolean {
  let n = 0;
  return () => ++n % every === 0;
}
