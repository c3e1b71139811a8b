// sliver stats without a registry: --since parsing, rates from usage samples, and the rendering.
import { InvalidArgumentError } from 'commander';
import { describe, expect, it } from 'vitest';
import type { Sliver, UsageHistory, UsageSample } from '@planetlite/api';
import { runCli } from './cli.js';
import type { Io } from './io.js';
import { sliverStats, usageTable } from './render.js';
import { parseDuration, parseSince, usageRows } from './stats.js';

const NOW = Date.parse('2030-01-31T12:00:00Z');

describe('--since', () => {
  it('takes durations back from now', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('30m')).toBe(1_800_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('2d')).toBe(172_800_000);
    for (const no of ['', 'h', '1x', '-1h', '1.5h', '30m1h', '1 h']) expect(parseDuration(no), no).toBeNull();

    expect(parseSince('1h', NOW)).toBe('2030-01-31T11:00:00.000Z');
    expect(parseSince('30m', NOW)).toBe('2030-01-31T11:30:00.000Z');
    expect(parseSince('24h', NOW)).toBe('2030-01-30T12:00:00.000Z');
    expect(parseSince(' 1H ', NOW)).toBe('2030-01-31T11:00:00.000Z');
  });

  it('takes RFC 3339 times with a zone, returned in UTC', () => {
    expect(parseSince('2030-01-31T10:00:00Z', NOW)).toBe('2030-01-31T10:00:00.000Z');
    expect(parseSince('2030-01-31T10:00:00.250+02:00', NOW)).toBe('2030-01-31T08:00:00.250Z');
    expect(parseSince('2030-01-31T10:00Z', NOW)).toBe('2030-01-31T10:00:00.000Z');
  });

  it('refuses anything else as a usage error', () => {
    for (const bad of ['yesterday', '0m', '0s', '2030-01-31', '2030-01-31T10:00:00', '2030-02-30T00:00:00Z', '1 hour', '-1h', '']) {
      expect(() => parseSince(bad, NOW), bad).toThrow(InvalidArgumentError);
    }
    expect(() => parseSince('soon', NOW)).toThrow(/30m, 1h, 24h .*RFC 3339/);
    expect(() => parseSince('0h', NOW)).toThrow(/longer than 0/);
    expect(() => parseSince('2030-01-31T12:00:01Z', NOW)).toThrow(/future/);
    expect(parseSince('2030-01-31T12:00:00Z', NOW)).toBe('2030-01-31T12:00:00.000Z');
  });

  it('a bad --since ends the command with exit 2 and a message naming the option, before any request', async () => {
    let stdout = '';
    let stderr = '';
    const io: Io = {
      stdout: { write: (s: string) => (stdout += s) },
      stderr: { write: (s: string) => (stderr += s) },
      // Nothing listens at this registry: getting that far would be exit 1, not 2.
      env: { HOME: '/nonexistent', PLANETLITE_REGISTRY: 'http://127.0.0.1:9', PLANETLITE_TOKEN: 't', PLANETLITE_CONFIG: '/nonexistent/config.json' },
    };
    const code = await runCli(['sliver', 'stats', '0b6e3c1a-0000-4000-8000-000000000000', '--since', 'soon'], io);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    const first = stderr.split('\n')[0] ?? '';
    expect(first).toMatch(/--since/);
    expect(first).toMatch(/soon/);
    expect(first).toMatch(/30m, 1h, 24h/);
  });
});

const sample = (minute: number, cpu: number | null, rx: number | null, tx: number | null, extra: Partial<UsageSample> = {}): UsageSample => ({
  at: new Date(NOW + minute * 60_000).toISOString(),
  cpu_seconds: cpu,
  memory_bytes: 64 << 20,
  disk_bytes: 300 << 20,
  net_rx_bytes: rx,
  net_tx_bytes: tx,
  ...extra,
});

describe('usage rates', () => {
  it('turn counter deltas into cpu % of one core and kbit/s over each interval', () => {
    const rows = usageRows([
      sample(0, 100, 1_000_000, 500_000),
      // 30 cpu seconds in 60 s: half a core; 750 kB in 60 s: 100 kbit/s.
      sample(1, 130, 1_750_000, 500_000, { memory_bytes: 70 << 20 }),
      // 150 cpu seconds in 60 s: two and a half cores.
      sample(2, 280, 1_750_000, 575_000),
    ]);
    expect(rows[0]).toMatchObject({ cpuPercent: null, rxKbps: null, txKbps: null, restarted: false, memoryBytes: 64 << 20, diskBytes: 300 << 20 });
    expect(rows[1]!.cpuPercent).toBeCloseTo(50, 9);
    expect(rows[1]!.rxKbps).toBeCloseTo(100, 9);
    expect(rows[1]!.txKbps).toBe(0);
    expect(rows[1]!.memoryBytes).toBe(70 << 20);
    expect(rows[2]!.cpuPercent).toBeCloseTo(250, 9);
    expect(rows[2]!.txKbps).toBeCloseTo(10, 9);
  });

  it('use the real gap between samples, not the nominal interval', () => {
    const rows = usageRows([sample(0, 0, 0, 0), sample(5, 60, 0, 0)]);
    expect(rows[1]!.cpuPercent).toBeCloseTo(20, 9);
  });

  it('show none for the interval in which a counter went down (the sliver restarted), and resume after', () => {
    const rows = usageRows([
      sample(0, 100, 5_000_000, 5_000_000),
      // Only cpu went down, yet rx rising across a restart is no rate either.
      sample(1, 2, 6_000_000, 5_000_000),
      sample(2, 8, 6_075_000, 5_000_000),
      // Only tx went down.
      sample(3, 9, 6_075_000, 100),
    ]);
    expect(rows.map((r) => r.restarted)).toEqual([false, true, false, true]);
    expect(rows[1]).toMatchObject({ cpuPercent: null, rxKbps: null, txKbps: null });
    expect(rows[2]!.cpuPercent).toBeCloseTo(10, 9);
    expect(rows[2]!.rxKbps).toBeCloseTo(10, 9);
    expect(rows[3]).toMatchObject({ cpuPercent: null, rxKbps: null, txKbps: null });
  });

  it('leave a rate out when either end of it was not reported, or the samples share a time', () => {
    const rows = usageRows([sample(0, null, 1000, 1000), sample(1, 10, null, 2000), sample(1, 20, 3000, 3000)]);
    expect(rows[1]).toMatchObject({ cpuPercent: null, rxKbps: null, restarted: false });
    expect(rows[1]!.txKbps).toBeCloseTo((1000 * 8) / 1000 / 60, 9);
    expect(rows[2]).toMatchObject({ cpuPercent: null, rxKbps: null, txKbps: null });
    expect(usageRows([])).toEqual([]);
  });
});

describe('rendering', () => {
  const history = (samples: UsageSample[]): UsageHistory => ({
    sliver: 'id',
    interval_seconds: 60,
    since: new Date(NOW - 3_600_000).toISOString(),
    until: new Date(NOW).toISOString(),
    samples,
    truncated: false,
  });

  it('a history table with "-" where there is no rate', () => {
    const lines = usageTable(history([sample(0, 100, 0, 0), sample(1, 130, 750_000, 0), sample(2, 1, 750_000, 0)])).split('\n');
    expect(lines[0]).toMatch(/^AT\s+CPU_%\s+MEMORY\s+DISK\s+RX_KBIT\/S\s+TX_KBIT\/S$/);
    expect(lines[1]!.split(/\s{2,}/)).toEqual(['2030-01-31T12:00:00Z', '-', '64 MiB', '300 MiB', '-', '-']);
    expect(lines[2]!.split(/\s{2,}/)).toEqual(['2030-01-31T12:01:00Z', '50.0', '64 MiB', '300 MiB', '100.0', '0.0']);
    expect(lines[3]!.split(/\s{2,}/)).toEqual(['2030-01-31T12:02:00Z', '-', '64 MiB', '300 MiB', '-', '-']);
  });

  it('the latest usage above the history, or a line saying there is none', () => {
    const sliver = {
      id: 'id',
      slice: 'princeton_codeen',
      state: 'running',
      usage: { cpu_seconds: 12.34, memory_bytes: 64 << 20, disk_bytes: 300 << 20, net_rx_bytes: 2048, net_tx_bytes: 10, at: new Date().toISOString() },
    } as Sliver;
    const text = sliverStats(sliver, history([]));
    expect(text).toMatch(/^cpu:\s+12\.3 s since start$/m);
    expect(text).toMatch(/^memory:\s+64 MiB$/m);
    expect(text).toMatch(/^disk:\s+300 MiB$/m);
    expect(text).toMatch(/^net_rx:\s+2\.0 KiB since start$/m);
    expect(text).toMatch(/^net_tx:\s+10 B since start$/m);
    expect(text).toMatch(/^reported_at:\s+\S+ \(now\)$/m);
    expect(text).toMatch(/^no usage samples since 2030-01-31T11:00:00Z/m);
    const never = sliverStats({ ...sliver, usage: null }, history([sample(0, 1, 1, 1)]));
    expect(never).toMatch(/^reported_at:\s+nothing reported yet$/m);
    expect(never).toMatch(/^cpu:\s+-$/m);
    expect(never).toMatch(/^AT\s+CPU_%/m);
  });
});
