// The memory watchdog, after PlanetLab's pl_mom: it samples host memory each second (every
// sliver's physical memory too near the levels, or always against a budget), warns at one level
// and, at a higher one, resets the one sliver using the most memory. pl_mom polled every 30 s and
// watched swap; a node here often has no swap, so the level is used memory (swap included) over
// all memory, or, in budget mode, the slivers' memory over a budget the site admin sets for them.
import { readFileSync } from 'node:fs';
import { errorFields } from '@planetlite/host';
import type { Logger } from '@planetlite/core';
import { parsePressure } from '@planetlite/instance';
import { defaultPressureSettings, PressureResponder, validatePressureSettings, type PressureOptions, type PressureSettings } from './pressure.js';

/** The memory levels here; the freeze on memory pressure (PressureSettings) in pressure.ts. */
export interface WatchdogSettings extends PressureSettings {
  enabled: boolean;
  /** Sampling period, ms (pl_mom: 30 000). */
  interval_ms: number;
  /** null: the level is the whole host's memory in use; a number: the slivers' resident memory
   * over this many MiB (a node that also runs other work, and the tests). */
  budget_mb: number | null;
  /** Level (percent) that records watchdog.warning. */
  warn_percent: number;
  /** Level (percent) at which the biggest sliver is reset. */
  reset_percent: number;
  /** A warning clears only once the level is this many points below warn_percent. */
  hysteresis_percent: number;
  /** After a reset, no other sliver is reset for this long: the memory a reset frees takes a
   * moment to show, and one crossing must never cost two slivers. */
  cooldown_seconds: number;
  /** Also reset when the kernel's memory pressure (PSI "full" avg10, percent of time every task
   * stalled on memory) reaches this; null: PSI is only reported. */
  psi_full_reset: number | null;
}

export const defaultWatchdogSettings: WatchdogSettings = {
  enabled: true,
  interval_ms: 1000,
  budget_mb: null,
  warn_percent: 85,
  reset_percent: 90,
  hysteresis_percent: 5,
  cooldown_seconds: 30,
  psi_full_reset: null,
  ...defaultPressureSettings,
};

/** Throws a message naming the first bad watchdog setting. */
export function validateWatchdogSettings(w: WatchdogSettings): void {
  const bad = (field: string, why: string): never => {
    throw new Error(`watchdog setting ${field} ${why}`);
  };
  const num = (field: keyof WatchdogSettings, min: number, max: number) => {
    const v = w[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) bad(field, `must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  };
  if (typeof w.enabled !== 'boolean') bad('enabled', 'must be true or false');
  num('interval_ms', 100, 60_000);
  if (w.budget_mb !== null) num('budget_mb', 16, 1 << 24);
  num('warn_percent', 1, 100);
  num('reset_percent', 1, 100);
  num('hysteresis_percent', 0, 50);
  num('cooldown_seconds', 0, 86_400);
  if (w.psi_full_reset !== null) num('psi_full_reset', 0.01, 100);
  if (w.warn_percent > w.reset_percent) bad('warn_percent', `(${w.warn_percent}) must not be above reset_percent (${w.reset_percent})`);
  validatePressureSettings(w);
}

export interface HostMemory {
  totalBytes: number;
  availableBytes: number;
  swapTotalBytes: number;
  swapFreeBytes: number;
  /** /proc/pressure/memory avg10 values, percent; null where the kernel has no PSI. */
  psi: { some: number; full: number } | null;
}

/** /proc/meminfo fields in bytes. */
export function parseMeminfo(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\w+(?:\(\w+\))?):\s+(\d+)(?:\s+kB)?$/.exec(line.trim());
    if (m) out.set(m[1]!, Number(m[2]) * (line.includes('kB') ? 1024 : 1));
  }
  return out;
}

/** avg10 of the "some" and "full" lines of /proc/pressure/memory. */
export const parsePsi = parsePressure;

export function readHostMemory(): HostMemory {
  const mi = parseMeminfo(readFileSync('/proc/meminfo', 'utf8'));
  let psi: HostMemory['psi'] = null;
  try {
    psi = parsePsi(readFileSync('/proc/pressure/memory', 'utf8'));
  } catch {
    // no PSI in this kernel (or psi=0 on its command line)
  }
  return {
    totalBytes: mi.get('MemTotal') ?? 0,
    availableBytes: mi.get('MemAvailable') ?? mi.get('MemFree') ?? 0,
    swapTotalBytes: mi.get('SwapTotal') ?? 0,
    swapFreeBytes: mi.get('SwapFree') ?? 0,
    psi,
  };
}

export interface SliverMemory {
  id: string;
  slice: string;
  bytes: number;
}

export interface Sample {
  /** ms since the epoch */
  at: number;
  host: HostMemory;
  /** Running slivers with their resident memory. */
  slivers: SliverMemory[];
}

/** What a sample shows, as events carry it. */
export interface Figures {
  mode: 'host' | 'budget';
  used_bytes: number;
  limit_bytes: number;
  used_percent: number;
  warn_percent: number;
  reset_percent: number;
  mem_total_bytes: number;
  mem_available_bytes: number;
  swap_total_bytes: number;
  swap_used_bytes: number;
  psi_some_avg10: number | null;
  psi_full_avg10: number | null;
  slivers_bytes: number;
  /** The biggest slivers, biggest first. */
  top: Array<{ sliver: string; slice: string; memory_bytes: number }>;
  sampled_at: string;
}

export type Decision =
  | { kind: 'none' }
  | { kind: 'warn'; figures: Figures }
  | { kind: 'reset'; victim: SliverMemory; figures: Figures; why: string }
  /** At the reset level with no sliver to reset: the memory is not the slivers'. Recorded once. */
  | { kind: 'nothing_to_reset'; figures: Figures };

const round = (n: number) => Math.round(n * 100) / 100;

/** The host's memory in use (swap included) and all of it, bytes. */
function hostLevel(h: HostMemory): [used: number, limit: number] {
  const swapUsed = Math.max(0, h.swapTotalBytes - h.swapFreeBytes);
  return [h.totalBytes - h.availableBytes + swapUsed, h.totalBytes + h.swapTotalBytes];
}

/**
 * The policy, apart from any clock or host so it can be tested alone. A warning is recorded once
 * per episode (cleared below warn − hysteresis). A reset takes the biggest sliver; then nothing
 * else is reset until the cooldown has passed, however high the level stays.
 */
export class WatchdogPolicy {
  readonly #s: WatchdogSettings;
  #warning = false;
  #cooldownUntil = 0;
  #reportedNothing = false;

  constructor(settings: WatchdogSettings) {
    validateWatchdogSettings(settings);
    this.#s = settings;
  }

  /**
   * Whether a sample needs each sliver's memory. Against a budget, always. Against the host's
   * memory, only at the warning level or past psi_full_reset, where the events name the biggest
   * slivers and a reset picks one: a calm node reads no sliver's cgroup each second (at 2,000
   * slivers that was most of the agent's time).
   */
  needsSlivers(host: HostMemory): boolean {
    const s = this.#s;
    if (s.budget_mb !== null) return true;
    if (s.psi_full_reset !== null && (host.psi?.full ?? 0) >= s.psi_full_reset) return true;
    const [used, limit] = hostLevel(host);
    return limit > 0 && round((used / limit) * 100) >= s.warn_percent;
  }

  figures(sample: Sample): Figures {
    const s = this.#s;
    const h = sample.host;
    const slivers = sample.slivers.reduce((a, v) => a + v.bytes, 0);
    const swapUsed = Math.max(0, h.swapTotalBytes - h.swapFreeBytes);
    const [used, limit] = s.budget_mb === null ? hostLevel(h) : [slivers, s.budget_mb * 1024 * 1024];
    const top = [...sample.slivers].sort((a, b) => b.bytes - a.bytes).slice(0, 5);
    return {
      mode: s.budget_mb === null ? 'host' : 'budget',
      used_bytes: used,
      limit_bytes: limit,
      used_percent: limit > 0 ? round((used / limit) * 100) : 0,
      warn_percent: s.warn_percent,
      reset_percent: s.reset_percent,
      mem_total_bytes: h.totalBytes,
      mem_available_bytes: h.availableBytes,
      swap_total_bytes: h.swapTotalBytes,
      swap_used_bytes: swapUsed,
      psi_some_avg10: h.psi?.some ?? null,
      psi_full_avg10: h.psi?.full ?? null,
      slivers_bytes: slivers,
      top: top.map((t) => ({ sliver: t.id, slice: t.slice, memory_bytes: t.bytes })),
      sampled_at: new Date(sample.at).toISOString(),
    };
  }

  observe(sample: Sample): Decision {
    const s = this.#s;
    const f = this.figures(sample);
    const psiHigh = s.psi_full_reset !== null && (f.psi_full_avg10 ?? 0) >= s.psi_full_reset;
    const atReset = f.used_percent >= s.reset_percent || psiHigh;
    if (!atReset) this.#reportedNothing = false;
    if (atReset && sample.at >= this.#cooldownUntil) {
      const victim = sample.slivers.reduce<SliverMemory | null>((big, v) => (v.bytes > 0 && (!big || v.bytes > big.bytes) ? v : big), null);
      if (victim) {
        this.#cooldownUntil = sample.at + s.cooldown_seconds * 1000;
        this.#warning = true;
        const why = psiHigh && f.used_percent < s.reset_percent
          ? `memory pressure ${f.psi_full_avg10}% ≥ ${s.psi_full_reset}%`
          : `${f.mode === 'budget' ? 'sliver memory' : 'host memory'} at ${f.used_percent}% ≥ ${s.reset_percent}%`;
        return { kind: 'reset', victim, figures: f, why };
      }
      if (!this.#reportedNothing) {
        this.#reportedNothing = true;
        this.#warning = true;
        return { kind: 'nothing_to_reset', figures: f };
      }
    }
    if (!this.#warning && f.used_percent >= s.warn_percent) {
      this.#warning = true;
      return { kind: 'warn', figures: f };
    }
    if (this.#warning && f.used_percent < s.warn_percent - s.hysteresis_percent) this.#warning = false;
    return { kind: 'none' };
  }
}

export interface WatchdogEvent {
  type: 'watchdog.warning' | 'watchdog.reset' | 'sliver.frozen' | 'sliver.thawed';
  sliver?: string;
  data: Record<string, unknown>;
}

export interface WatchdogOptions {
  settings: WatchdogSettings;
  /** Running slivers to watch (never anything else). */
  slivers: () => Array<{ id: string; slice: string }>;
  /** A sliver's resident memory, or null when it is not running. */
  memoryOf: (id: string) => Promise<number | null>;
  /** Stops the sliver now (resolves once its memory is freed) and starts it again in the
   * background; returns what was done. */
  reset: (id: string) => Promise<{ action: 'restart' | 'restore' }>;
  emit: (ev: WatchdogEvent) => void;
  log: Logger;
  /** The host's memory (tests may replace it). */
  readHost?: () => HostMemory;
  /** Freezing on memory pressure (pressure.ts); without it, pressure only counts for psi_full_reset. */
  pressure?: Pick<PressureOptions, 'slivers' | 'freeze' | 'thaw'>;
}

/** The sampling loop: one sample per interval, never two at once, stopped cleanly. */
export class Watchdog {
  readonly #o: WatchdogOptions;
  readonly #policy: WatchdogPolicy;
  readonly #pressure: PressureResponder | null;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> = Promise.resolve();
  #stopped = true;

  constructor(opts: WatchdogOptions) {
    this.#o = opts;
    this.#policy = new WatchdogPolicy(opts.settings);
    this.#pressure = opts.pressure ? new PressureResponder({ ...opts.pressure, settings: opts.settings, reset: opts.reset, emit: opts.emit, log: opts.log }) : null;
  }

  /** The freeze-on-pressure responder, when the watchdog has one. */
  get pressure(): PressureResponder | null {
    return this.#pressure;
  }

  start(): void {
    if (!this.#o.settings.enabled || !this.#stopped) return;
    this.#stopped = false;
    this.#schedule();
    this.#o.log.info({ interval_ms: this.#o.settings.interval_ms, budget_mb: this.#o.settings.budget_mb, warn: this.#o.settings.warn_percent, reset: this.#o.settings.reset_percent }, 'memory watchdog running');
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#running;
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.tick().then(() => undefined, (err: unknown) => {
        this.#o.log.error(errorFields(err), 'watchdog sample failed');
      }).finally(() => this.#schedule());
    }, this.#o.settings.interval_ms);
  }

  /** Takes one sample and acts on it (exported for tests and the benchmark). */
  async tick(): Promise<Decision> {
    const at = Date.now();
    const host = (this.#o.readHost ?? readHostMemory)();
    const slivers: SliverMemory[] = [];
    for (const s of this.#policy.needsSlivers(host) ? this.#o.slivers() : []) {
      const bytes = await this.#o.memoryOf(s.id).catch(() => null);
      if (bytes !== null) slivers.push({ ...s, bytes });
    }
    const d = this.#policy.observe({ at, host, slivers });
    const { emit, log } = this.#o;
    switch (d.kind) {
      case 'warn':
        log.warn({ used_percent: d.figures.used_percent }, 'memory watchdog: warning level reached');
        emit({ type: 'watchdog.warning', data: { ...d.figures, level: 'warning' } });
        break;
      case 'nothing_to_reset':
        log.warn({ used_percent: d.figures.used_percent }, 'memory watchdog: reset level reached, but no sliver holds memory to free');
        emit({ type: 'watchdog.warning', data: { ...d.figures, level: 'reset', note: 'no sliver to reset: the memory is held outside the slivers' } });
        break;
      case 'reset': {
        const { victim, figures, why } = d;
        log.warn({ sliver: victim.id, slice: victim.slice, memory_bytes: victim.bytes, why }, 'memory watchdog: resetting the biggest sliver');
        let action: string;
        let error: string | null = null;
        try {
          action = (await this.#o.reset(victim.id)).action;
        } catch (err) {
          action = 'failed';
          error = err instanceof Error ? err.message : String(err);
          log.error({ sliver: victim.id, err: error }, 'memory watchdog: reset failed');
        }
        const done = Date.now();
        this.#pressure?.policy.release(victim.id, false);
        emit({
          type: 'watchdog.reset',
          sliver: victim.id,
          data: { ...figures, level: 'reset', reason: why, slice: victim.slice, memory_bytes: victim.bytes, action, error, reset_at: new Date(done).toISOString(), reaction_ms: done - at },
        });
        break;
      }
      case 'none':
        break;
    }
    // After the memory levels (a kill frees memory at once), the freeze on memory pressure.
    await this.#pressure?.tick(at, host.psi);
    return d;
  }
}
