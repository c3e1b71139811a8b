// How the serving replica's garbage collector is tuned.
import { setFlagsFromString } from 'node:v8';

/**
 * No collections from V8's memory reducer. It starts full collections of its own when it judges the
 * process to have gone quiet, and compacts the whole heap in them to give memory back. A replica
 * holding thousands of nodes' connections is never quiet for long: at 10,000 nodes those were the
 * longest stops of its event loop (283–451 ms, where its other major collections took 20–80 ms),
 * and every change and poll waiting on that replica waited with them (docs/benchmarks.md,
 * 2026-12-07). The ordinary collections still run as the heap grows. `--no-memory-reducer` is a
 * start-up flag only; a limit of no reducer collections is read as they are due, so it works here.
 */
export function tuneGcForServing(): void {
  setFlagsFromString('--memory-reducer-gc-count=0');
}
