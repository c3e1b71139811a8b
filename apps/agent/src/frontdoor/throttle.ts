// Failed logins counted per source address, in bounded memory: after a few free ones, each
// further refusal from that source is answered more slowly, up to a ceiling.
const FREE = 5;
const STEP_MS = 200;
const CEILING_MS = 5000;
/** A source quiet this long starts again from nothing. */
const FORGET_MS = 10 * 60_000;

export class FailureCounter {
  readonly #max: number;
  /** In order of last failure: the first entry is the stalest, dropped when full. */
  readonly #bySource = new Map<string, { count: number; at: number }>();

  constructor(maxSources = 10_000) {
    this.#max = maxSources;
  }

  get size(): number {
    return this.#bySource.size;
  }

  /** Records a failure; the delay, ms, before the refusal is sent. */
  fail(source: string, now = Date.now()): number {
    const was = this.#bySource.get(source);
    const count = was && now - was.at < FORGET_MS ? was.count + 1 : 1;
    this.#bySource.delete(source);
    this.#bySource.set(source, { count, at: now });
    if (this.#bySource.size > this.#max) this.#bySource.delete(this.#bySource.keys().next().value!);
    return count <= FREE ? 0 : Math.min(CEILING_MS, (count - FREE) * STEP_MS);
  }

  forget(source: string): void {
    this.#bySource.delete(source);
  }
}
