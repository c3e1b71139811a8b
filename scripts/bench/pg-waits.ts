// What PostgreSQL's backends wait on during a benchmark's window (pg_stat_activity, sampled).
import type pg from 'pg';

/**
 * What the database's backends are doing, sampled every everyMs: the mean number of backends in each
 * state and wait (ClientRead while idle in a transaction is a pool connection held by a replica
 * between two statements; Lock/transactionid or Lock/tuple is a row lock someone waits on).
 */
export function sampleWaits(db: pg.Client, everyMs = 250): { stop: () => Promise<string> } {
  const counts = new Map<string, number>();
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const { rows } = await db.query(
        `SELECT state, coalesce(wait_event_type || '/' || wait_event, 'CPU') AS w, count(*)::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state <> 'idle' GROUP BY 1, 2`,
      );
      samples++;
      for (const r of rows) counts.set(`${r.state} ${r.w}`, (counts.get(`${r.state} ${r.w}`) ?? 0) + (r.n as number));
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return [...counts].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([k, n]) => `${k} ${(n / Math.max(1, samples)).toFixed(1)}`).join('; ') || 'none';
    },
  };
}

/** One reading of the statements running on the database: their opening words, how many of each. */
export interface ActiveReading {
  at: number;
  running: Record<string, number>;
}

/**
 * The statements running on the database, read every everyMs (performance.now() of this process):
 * which kinds of statement fill the connections when a replica's lane is deep.
 */
export function sampleActive(db: pg.Client, everyMs = 250): { stop: () => Promise<ActiveReading[]> } {
  const readings: ActiveReading[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const { rows } = await db.query(
        `SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 70) AS q, count(*)::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active' GROUP BY 1`,
      );
      readings.push({ at: performance.now(), running: Object.fromEntries(rows.map((r) => [r.q as string, r.n as number])) });
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return readings;
    },
  };
}

/** The statements most often running in the readings between from and to, as "N× opening words". */
export function mostRunning(readings: readonly ActiveReading[], from: number, to: number, top = 3): string {
  const sum = new Map<string, number>();
  for (const r of readings) if (r.at >= from && r.at < to) for (const [q, n] of Object.entries(r.running)) sum.set(q, (sum.get(q) ?? 0) + n);
  return [...sum].sort((a, b) => b[1] - a[1]).slice(0, top).map(([q, n]) => `${n}× ${q}`).join(' | ') || 'none';
}
