// The watchdog's first response to memory pressure, before any kill: when the node's tasks stall
// on memory (PSI), the sliver stalling most is frozen (cgroup freezer), thawed once the node has
// calmed down, and reset if it has not within a set time or keeps bringing the pressure back.
// The policy is pure (PressurePolicy, tested with sampled figures); PressureResponder drives it.
import { errorFields } from '@planetlite/host';
import type { Logger } from '@planetlite/core';
import type { Psi } from '@planetlite/instance';

export interface PressureSettings {
  /** Node memory pressure (/proc/pressure/memory "some" avg10, percent of time at least one task
   * stalled on memory) at which the sliver causing it is frozen; null: never freeze. */
  freeze_psi_some: number | null;
  /** A frozen sliver is thawed once the node's pressure is below this. */
  thaw_psi_some: number;
  /** Only a sliver whose own memory.pressure "some" avg10 is at least this is frozen: pressure
   * from outside the slivers freezes nobody. */
  sliver_psi_min: number;
  /** A sliver still frozen after this long (the pressure did not fall) is reset. */
  freeze_timeout_seconds: number;
  /** The freeze that would be a sliver's this-many-th within ten minutes is a reset instead:
   * a sliver that thrashes again as soon as it is thawed is not frozen for ever. */
  freeze_strikes: number;
}

export const defaultPressureSettings: PressureSettings = {
  freeze_psi_some: 30,
  thaw_psi_some: 10,
  sliver_psi_min: 10,
  freeze_timeout_seconds: 60,
  freeze_strikes: 3,
};

/** The window in which freezes count as strikes. */
export const STRIKE_WINDOW_MS = 10 * 60_000;

/** Throws a message naming the first bad setting. */
export function validatePressureSettings(p: PressureSettings): void {
  const num = (field: keyof PressureSettings, min: number, max: number) => {
    const v = p[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new Error(`watchdog setting ${field} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  };
  if (p.freeze_psi_some !== null) num('freeze_psi_some', 0.01, 100);
  num('thaw_psi_some', 0, 100);
  num('sliver_psi_min', 0, 100);
  num('freeze_timeout_seconds', 1, 86_400);
  num('freeze_strikes', 1, 100);
  if (p.freeze_psi_some !== null && p.thaw_psi_some > p.freeze_psi_some)
    throw new Error(`watchdog setting thaw_psi_some (${p.thaw_psi_some}) must not be above freeze_psi_some (${p.freeze_psi_some})`);
}

export type { Psi };

/** A running sliver the watchdog may freeze, with its own cgroup's memory pressure. */
export interface SliverPressure {
  id: string;
  slice: string;
  psi: Psi;
}

export interface PressureSample {
  /** ms since the epoch */
  at: number;
  /** /proc/pressure/memory; null where the kernel has no PSI (then nothing is ever frozen). */
  node: Psi | null;
  /** Slivers that run as their slice asked (none frozen or stopped by its users). */
  slivers: SliverPressure[];
}

/** What events carry. */
export interface PressureFigures {
  node_psi_some_avg10: number | null;
  node_psi_full_avg10: number | null;
  freeze_psi_some: number | null;
  thaw_psi_some: number;
  sliver_psi_min: number;
  freeze_timeout_seconds: number;
  /** The slivers stalling most on memory, most first. */
  top: Array<{ sliver: string; slice: string; psi_some_avg10: number; psi_full_avg10: number }>;
  sampled_at: string;
}

/** A sliver the watchdog holds frozen. */
export interface Held {
  id: string;
  slice: string;
  since: number;
  /** Its own pressure when it was frozen. */
  psi: Psi;
}

export type PressureDecision =
  | { kind: 'none' }
  | { kind: 'freeze'; sliver: SliverPressure; figures: PressureFigures; why: string; strike: number }
  | { kind: 'thaw'; held: Held; figures: PressureFigures; frozen_ms: number }
  | { kind: 'reset'; sliver: { id: string; slice: string; psi: Psi }; figures: PressureFigures; why: string; frozen_ms: number | null }
  /** High pressure with no sliver stalling enough to be its cause: recorded once an episode. */
  | { kind: 'no_culprit'; figures: PressureFigures };

/**
 * Which sliver: the one whose own memory.pressure "some" avg10 is highest ("full" breaks a tie).
 * A sliver's pressure is the share of time its tasks waited on reclaim, refaults or its own limit:
 * a sliver thrashing in a small limit stalls most and, through reclaim and I/O, slows the whole
 * node, while the sliver with the most memory (pl_mom's choice, still the kill path's) may be
 * quietly using memory it was given. Freezing the staller stops the stalls at their source.
 *
 * One sliver is held at a time: after a freeze the node's avg10 needs some seconds to fall, and a
 * second freeze meanwhile would punish a bystander.
 */
export class PressurePolicy {
  readonly #s: PressureSettings;
  #held: Held | null = null;
  readonly #strikes = new Map<string, number[]>();
  /** Thawed by their users in this episode: not frozen again until the pressure has fallen. */
  readonly #exempt = new Set<string>();
  #reportedNoCulprit = false;

  constructor(settings: PressureSettings) {
    validatePressureSettings(settings);
    this.#s = settings;
  }

  get held(): Held | null {
    return this.#held;
  }

  /** The sliver's users acted on it (thaw, freeze, stop, reset…): the watchdog lets go of it;
   * after a thaw it leaves it running until the pressure has fallen. */
  release(id: string, userThawed: boolean): void {
    if (this.#held?.id === id) this.#held = null;
    if (userThawed) this.#exempt.add(id);
  }

  /** Whether a sample needs each sliver's own pressure: only while one is held or the node is at
   * the freeze level (a calm node reads no sliver's cgroup each second). */
  needsSlivers(node: Psi | null): boolean {
    const s = this.#s;
    return s.freeze_psi_some !== null && node !== null && (this.#held !== null || node.some >= s.freeze_psi_some);
  }

  figures(sample: PressureSample): PressureFigures {
    const s = this.#s;
    const top = [...sample.slivers].sort(byPressure).slice(0, 5);
    return {
      node_psi_some_avg10: sample.node?.some ?? null,
      node_psi_full_avg10: sample.node?.full ?? null,
      freeze_psi_some: s.freeze_psi_some,
      thaw_psi_some: s.thaw_psi_some,
      sliver_psi_min: s.sliver_psi_min,
      freeze_timeout_seconds: s.freeze_timeout_seconds,
      top: top.map((t) => ({ sliver: t.id, slice: t.slice, psi_some_avg10: t.psi.some, psi_full_avg10: t.psi.full })),
      sampled_at: new Date(sample.at).toISOString(),
    };
  }

  observe(sample: PressureSample): PressureDecision {
    const s = this.#s;
    if (s.freeze_psi_some === null || sample.node === null) return { kind: 'none' };
    const node = sample.node.some;
    const calm = node < s.thaw_psi_some;
    if (calm) {
      this.#exempt.clear();
      this.#reportedNoCulprit = false;
    }
    const held = this.#held;
    if (held) {
      const frozenMs = sample.at - held.since;
      if (calm) {
        this.#held = null;
        return { kind: 'thaw', held, figures: this.figures(sample), frozen_ms: frozenMs };
      }
      if (frozenMs >= s.freeze_timeout_seconds * 1000) {
        this.#held = null;
        this.#strikes.delete(held.id);
        const why = `node memory pressure still ${node}% ≥ ${s.thaw_psi_some}% after ${s.freeze_timeout_seconds} s frozen`;
        return { kind: 'reset', sliver: held, figures: this.figures(sample), why, frozen_ms: frozenMs };
      }
      return { kind: 'none' };
    }
    if (node < s.freeze_psi_some) return { kind: 'none' };
    const culprit = sample.slivers.filter((v) => !this.#exempt.has(v.id) && v.psi.some >= s.sliver_psi_min).sort(byPressure)[0];
    if (!culprit) {
      if (this.#reportedNoCulprit) return { kind: 'none' };
      this.#reportedNoCulprit = true;
      return { kind: 'no_culprit', figures: this.figures(sample) };
    }
    const recent = (this.#strikes.get(culprit.id) ?? []).filter((t) => sample.at - t < STRIKE_WINDOW_MS);
    const strike = recent.length + 1;
    if (strike >= s.freeze_strikes && s.freeze_strikes > 1) {
      this.#strikes.delete(culprit.id);
      const why = `node memory pressure ${node}% ≥ ${s.freeze_psi_some}% again, and this sliver caused it (its own ${culprit.psi.some}%) ${strike} times within ${STRIKE_WINDOW_MS / 60_000} minutes`;
      return { kind: 'reset', sliver: culprit, figures: this.figures(sample), why, frozen_ms: null };
    }
    this.#strikes.set(culprit.id, [...recent, sample.at]);
    this.#held = { id: culprit.id, slice: culprit.slice, since: sample.at, psi: culprit.psi };
    const why = `node memory pressure ${node}% ≥ ${s.freeze_psi_some}%, and this sliver stalled on memory the most (its own ${culprit.psi.some}%)`;
    return { kind: 'freeze', sliver: culprit, figures: this.figures(sample), why, strike };
  }
}

const byPressure = (a: SliverPressure, b: SliverPressure) => b.psi.some - a.psi.some || b.psi.full - a.psi.full;

export interface PressureEvent {
  type: 'sliver.frozen' | 'sliver.thawed' | 'watchdog.reset' | 'watchdog.warning';
  sliver?: string;
  data: Record<string, unknown>;
}

export interface PressureOptions {
  settings: PressureSettings;
  /** Running slivers that run as their slice asked, with their own memory pressure (null: the
   * driver cannot tell; such a sliver is never frozen). */
  slivers: () => Promise<Array<{ id: string; slice: string; psi: Psi | null }>>;
  freeze: (id: string, figures: Record<string, unknown>) => Promise<void>;
  thaw: (id: string) => Promise<void>;
  /** The memory reset (the kill path's): kills now, brings it back in the background. */
  reset: (id: string) => Promise<{ action: 'restart' | 'restore' }>;
  emit: (ev: PressureEvent) => void;
  log: Logger;
}

/** Acts on the policy's decisions; the watchdog's loop calls tick once a sample. */
export class PressureResponder {
  readonly #o: PressureOptions;
  readonly policy: PressurePolicy;

  constructor(opts: PressureOptions) {
    this.#o = opts;
    this.policy = new PressurePolicy(opts.settings);
  }

  async tick(at: number, node: Psi | null): Promise<PressureDecision> {
    if (this.#o.settings.freeze_psi_some === null || node === null) return { kind: 'none' };
    const slivers: SliverPressure[] = [];
    for (const s of this.policy.needsSlivers(node) ? await this.#o.slivers() : []) if (s.psi) slivers.push({ id: s.id, slice: s.slice, psi: s.psi });
    const d = this.policy.observe({ at, node, slivers });
    const { emit, log } = this.#o;
    const err = (e: unknown) => (e instanceof Error ? e.message : String(e));
    switch (d.kind) {
      case 'freeze': {
        const data = { ...d.figures, reason: d.why, slice: d.sliver.slice, sliver_psi_some_avg10: d.sliver.psi.some, sliver_psi_full_avg10: d.sliver.psi.full, strike: d.strike, frozen_at: new Date(at).toISOString() };
        log.warn({ sliver: d.sliver.id, slice: d.sliver.slice, node_psi: node.some, sliver_psi: d.sliver.psi.some }, 'memory watchdog: freezing the sliver causing memory pressure');
        try {
          await this.#o.freeze(d.sliver.id, data);
        } catch (e) {
          // Not frozen: let go, so that the next sample may try again or fall back to the kill path.
          this.policy.release(d.sliver.id, false);
          log.error({ sliver: d.sliver.id, ...errorFields(e) }, 'memory watchdog: freeze failed');
          emit({ type: 'watchdog.warning', sliver: d.sliver.id, data: { ...data, level: 'freeze', error: err(e) } });
          break;
        }
        emit({ type: 'sliver.frozen', sliver: d.sliver.id, data: { ...data, reaction_ms: Date.now() - at } });
        break;
      }
      case 'thaw': {
        log.info({ sliver: d.held.id, node_psi: node.some, frozen_ms: d.frozen_ms }, 'memory watchdog: pressure fell, thawing');
        let error: string | null = null;
        await this.#o.thaw(d.held.id).catch((e: unknown) => {
          error = err(e);
          log.error({ sliver: d.held.id, ...errorFields(e) }, 'memory watchdog: thaw failed');
        });
        emit({ type: 'sliver.thawed', sliver: d.held.id, data: { ...d.figures, slice: d.held.slice, frozen_ms: d.frozen_ms, sliver_psi_some_avg10_at_freeze: d.held.psi.some, error } });
        break;
      }
      case 'reset': {
        log.warn({ sliver: d.sliver.id, why: d.why }, 'memory watchdog: resetting the sliver causing memory pressure');
        let action: string;
        let error: string | null = null;
        try {
          action = (await this.#o.reset(d.sliver.id)).action;
        } catch (e) {
          action = 'failed';
          error = err(e);
          log.error({ sliver: d.sliver.id, err: error }, 'memory watchdog: reset failed');
        }
        const done = Date.now();
        emit({
          type: 'watchdog.reset',
          sliver: d.sliver.id,
          data: { ...d.figures, level: 'pressure', reason: d.why, slice: d.sliver.slice, sliver_psi_some_avg10: d.sliver.psi.some, sliver_psi_full_avg10: d.sliver.psi.full, frozen_ms: d.frozen_ms, action, error, reset_at: new Date(done).toISOString(), reaction_ms: done - at },
        });
        break;
      }
      case 'no_culprit':
        log.warn({ node_psi: node.some }, 'memory watchdog: memory pressure high, but no sliver stalls enough to be its cause');
        emit({ type: 'watchdog.warning', data: { ...d.figures, level: 'pressure', note: 'no sliver to freeze: the pressure comes from outside the slivers' } });
        break;
      case 'none':
        break;
    }
    return d;
  }
}
