// An undo list: a multi-step host change registers how to undo each step as it goes, and a
// failure part-way undoes them all, newest first (as Incus's revert package does).
export class Reverter {
  readonly #undo: Array<() => Promise<unknown> | unknown> = [];

  add(undo: () => Promise<unknown> | unknown): void {
    this.#undo.push(undo);
  }

  /** The change is complete: keep it. */
  success(): void {
    this.#undo.length = 0;
  }

  /** Undoes every registered step; errors are collected, not thrown, so every undo runs. */
  async fail(): Promise<unknown[]> {
    const errors: unknown[] = [];
    while (this.#undo.length) {
      const step = this.#undo.pop()!;
      try {
        await step();
      } catch (err) {
        errors.push(err);
      }
    }
    return errors;
  }

  /** Runs fn; if it throws, undoes what it registered and rethrows. */
  static async wrap<T>(fn: (r: Reverter) => Promise<T>): Promise<T> {
    const r = new Reverter();
    try {
      const out = await fn(r);
      r.success();
      return out;
    } catch (err) {
      await r.fail();
      throw err;
    }
  }
}
