// Processes the kernel killed inside a sliver's memory cgroup for reaching its limit: the sliver
// runs on (its other processes and its neighbours are untouched), and its members learn what was
// killed and why from one event per new count. Read from cgroupfs with every report (seconds).
import type { NodeEventCreate } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import type { InstanceDriver } from '@planetlite/instance';

export interface OomWatchOptions {
  slivers: () => Array<{ id: string; slice: string }>;
  driverOf: (id: string) => InstanceDriver | null;
  /** The sliver's memory limit as its document says, MiB. */
  limitMb: (id: string) => number | null;
  emit: (ev: NodeEventCreate) => void;
  log: Logger;
}

export class OomWatch {
  readonly #o: OomWatchOptions;
  /** The count last read per sliver. The first reading is the base: kills while no agent ran
   * are not told twice (a cgroup made anew by a restart counts from 0 again). */
  readonly #seen = new Map<string, number>();

  constructor(opts: OomWatchOptions) {
    this.#o = opts;
  }

  async check(): Promise<void> {
    const live = new Set<string>();
    for (const { id, slice } of this.#o.slivers()) {
      const driver = this.#o.driverOf(id);
      const total = (await driver?.oomKills?.(id).catch(() => null)) ?? null;
      if (total === null) continue;
      live.add(id);
      const before = this.#seen.get(id);
      this.#seen.set(id, total);
      if (before === undefined) continue;
      const kills = total >= before ? total - before : total;
      if (kills === 0) continue;
      const memoryLimitMb = this.#o.limitMb(id);
      const memoryBytes = (await driver!.memoryBytes(id).catch(() => null)) ?? null;
      this.#o.log.warn({ sliver: id, slice, kills, memory_limit_mb: memoryLimitMb }, 'the kernel killed processes of a sliver at its memory limit');
      this.#o.emit({
        type: 'sliver.oom_killed',
        sliver: id,
        data: { slice, kills, oom_kills_total: total, memory_limit_mb: memoryLimitMb, memory_bytes: memoryBytes, reason: `${kills} process${kills === 1 ? '' : 'es'} of this sliver killed by the kernel at its memory limit${memoryLimitMb === null ? '' : ` of ${memoryLimitMb} MiB`}; the sliver runs on` },
      });
    }
    for (const id of this.#seen.keys()) if (!live.has(id)) this.#seen.delete(id);
  }
}
