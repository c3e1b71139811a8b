// Processes the kernel killed inside a sliver's memory cgroup for reaching its limit: the sliver
// runs on (its other processes and its neighbours are untouched), and its members learn what was
// killed and why from one event per new count. Read from cgroupfs with every report (seconds).
import type { NodeEventCreate } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import type { InstanceDriver } from '@planetlite/instance';

export interface OomWatchOptions {
  /** Slivers, and warm-pool spares (slice null: counted, never told; a spare handed out keeps its
   * id and cgroup, so its count goes on as the sliver's). */
  slivers: () => Array<{ id: string; slice: string | null }>;
  driverOf: (id: string) => InstanceDriver | null;
  /** The sliver's memory limit as its document says, MiB. */
  limitMb: (id: string) => number | null;
  emit: (ev: NodeEventCreate) => void;
  log: Logger;
}

export class OomWatch {
  readonly #o: OomWatchOptions;
  /** The count last read per sliver. A sliver this agent started counts from 0 (its cgroup is
   * new: a process killed in its first seconds, before any report, is told too); for one already
   * running when the agent came, the first reading is the base, so kills while no agent ran are
   * not told twice. A count that went down is a cgroup made anew: it counts from 0 again. */
  readonly #seen = new Map<string, number>();
  /** Bumped by started(): a reading begun before it is of the old cgroup and is dropped. */
  readonly #starts = new Map<string, number>();

  constructor(opts: OomWatchOptions) {
    this.#o = opts;
  }

  /** This agent has just started the sliver's instance. */
  started(id: string): void {
    this.#seen.set(id, 0);
    this.#starts.set(id, (this.#starts.get(id) ?? 0) + 1);
  }

  async check(): Promise<void> {
    const listed = new Set<string>();
    for (const { id, slice } of this.#o.slivers()) {
      listed.add(id);
      const driver = this.#o.driverOf(id);
      const starts = this.#starts.get(id);
      const total = (await driver?.oomKills?.(id).catch(() => null)) ?? null;
      // Stopped (no cgroup): its last count stays until it is started again.
      if (total === null || this.#starts.get(id) !== starts) continue;
      const before = this.#seen.get(id);
      this.#seen.set(id, total);
      if (before === undefined) continue;
      const kills = total >= before ? total - before : total;
      if (kills === 0 || slice === null) continue;
      const memoryLimitMb = this.#o.limitMb(id);
      const memoryBytes = (await driver!.memoryBytes(id).catch(() => null)) ?? null;
      this.#o.log.warn({ sliver: id, slice, kills, memory_limit_mb: memoryLimitMb }, 'the kernel killed processes of a sliver at its memory limit');
      this.#o.emit({
        type: 'sliver.oom_killed',
        sliver: id,
        data: { slice, kills, oom_kills_total: total, memory_limit_mb: memoryLimitMb, memory_bytes: memoryBytes, reason: `${kills} process${kills === 1 ? '' : 'es'} of this sliver killed by the kernel at its memory limit${memoryLimitMb === null ? '' : ` of ${memoryLimitMb} MiB`}; the sliver runs on` },
      });
    }
    // Deleted slivers and spares.
    for (const id of this.#seen.keys()) if (!listed.has(id)) this.#seen.delete(id);
    for (const id of this.#starts.keys()) if (!listed.has(id)) this.#starts.delete(id);
  }
}
