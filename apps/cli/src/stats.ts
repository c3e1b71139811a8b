// The arithmetic of `planetlite sliver stats`: what --since means, and per-interval rates from the
// registry's usage samples (cumulative counters become cpu % and kbit/s).
import { InvalidArgumentError } from 'commander';
import type { UsageSample } from '@planetlite/api';

const UNIT_MS: Record<string, number> = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 };
// 90s, 30m, 1h, 24h, 2d, or combined largest unit first: 1h30m.
const DURATION = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/;
// RFC 3339; seconds may be left out (2030-01-31T12:00Z), the zone may not.
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:\d{2})$/;

export const SINCE_HELP = 'a duration such as 30m, 1h, 24h or 1h30m, or an RFC 3339 time such as 2030-01-31T12:00:00Z';

/** Milliseconds in a duration like 1h30m, or null when the text is not one. */
export function parseDuration(text: string): number | null {
  const m = DURATION.exec(text);
  if (!m || text === '') return null;
  return ['d', 'h', 'm', 's'].reduce((ms, unit, i) => ms + Number(m[i + 1] ?? 0) * (UNIT_MS[unit] ?? 0), 0);
}

/** --since: a duration back from now, or a time; returned as RFC 3339 UTC. A bad value is a usage error. */
export function parseSince(value: string, now: number = Date.now()): string {
  const text = value.trim();
  const ms = parseDuration(text.toLowerCase());
  if (ms !== null) {
    if (ms <= 0) throw new InvalidArgumentError('must be longer than 0');
    return new Date(now - ms).toISOString();
  }
  const at = RFC3339.test(text) && realDay(text) ? Date.parse(text) : NaN;
  if (Number.isNaN(at)) throw new InvalidArgumentError(`must be ${SINCE_HELP}`);
  if (at > now) throw new InvalidArgumentError('must not be in the future');
  return new Date(at).toISOString();
}

// Date.parse quietly rolls 2030-02-30 over into March; a typo should not.
function realDay(text: string): boolean {
  const [y, m, d] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  const day = new Date(Date.UTC(y, m - 1, d));
  return day.getUTCMonth() === m - 1 && day.getUTCDate() === d;
}

/** One history row: the sample's current figures and the rates over the interval that ended with it. */
export interface UsageRow {
  at: string;
  /** Share of one core over the interval, in percent; above 100 when more than one core was busy. */
  cpuPercent: number | null;
  memoryBytes: number | null;
  diskBytes: number | null;
  /** Kilobits (1000 bits) per second received and sent over the interval. */
  rxKbps: number | null;
  txKbps: number | null;
  /** A cumulative counter went down: the sliver's container started again during the interval. */
  restarted: boolean;
}

const COUNTERS = ['cpu_seconds', 'net_rx_bytes', 'net_tx_bytes'] as const;

/** Rates between consecutive samples (oldest first). The first row, and any row after a restart, has none. */
export function usageRows(samples: readonly UsageSample[]): UsageRow[] {
  return samples.map((cur, i) => {
    const prev = i > 0 ? samples[i - 1] : undefined;
    const row: UsageRow = {
      at: cur.at,
      cpuPercent: null,
      memoryBytes: cur.memory_bytes,
      diskBytes: cur.disk_bytes,
      rxKbps: null,
      txKbps: null,
      restarted: false,
    };
    if (!prev) return row;
    const seconds = (Date.parse(cur.at) - Date.parse(prev.at)) / 1000;
    if (!(seconds > 0)) return row;
    // After a restart every counter began again from zero, so no delta in this interval means anything.
    row.restarted = COUNTERS.some((k) => cur[k] !== null && prev[k] !== null && (cur[k] as number) < (prev[k] as number));
    if (row.restarted) return row;
    const delta = (k: (typeof COUNTERS)[number]): number | null => {
      const a = prev[k];
      const b = cur[k];
      return a === null || b === null ? null : b - a;
    };
    const cpu = delta('cpu_seconds');
    const rx = delta('net_rx_bytes');
    const tx = delta('net_tx_bytes');
    row.cpuPercent = cpu === null ? null : (cpu / seconds) * 100;
    row.rxKbps = rx === null ? null : (rx * 8) / 1000 / seconds;
    row.txKbps = tx === null ? null : (tx * 8) / 1000 / seconds;
    return row;
  });
}

/** A rate for a table cell: one decimal, null stays null (shown as '-'). */
export function rate(n: number | null): string | null {
  return n === null ? null : n.toFixed(1);
}
