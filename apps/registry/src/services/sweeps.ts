// Scheduled housekeeping: expire slices past their date, mark silent nodes offline, prune old usage samples.
import cron from 'node-cron';
import type { RegistryContext } from '../context.js';
import { withChanges } from './changes.js';
import { tearDownSlice } from './slices.js';

/** Tears down every active slice whose expiry has passed; returns their names. Safe on many replicas. */
export async function sweepExpiredSlices(ctx: RegistryContext, now = new Date()): Promise<string[]> {
  const { rows } = await ctx.db.query<{ name: string }>("SELECT name FROM slices WHERE state = 'active' AND expires_at <= $1 ORDER BY name", [now]);
  const expired: string[] = [];
  for (const { name } of rows) {
    await withChanges(ctx, async (q, changes) => {
      // Re-check under the row lock: another replica may have swept it meanwhile.
      const { rows: still } = await q.query("SELECT 1 FROM slices WHERE name = $1 AND state = 'active' AND expires_at <= $2 FOR NO KEY UPDATE", [name, now]);
      if (!still[0]) return;
      await tearDownSlice(q, changes, name, 'expired');
      expired.push(name);
    });
  }
  if (expired.length) ctx.log.info({ slices: expired }, 'expired slices torn down');
  return expired;
}

/** Marks nodes that have not called in for nodeOfflineAfterSeconds offline; returns their ids. */
export async function sweepOfflineNodes(ctx: RegistryContext, now = new Date()): Promise<string[]> {
  const cutoff = new Date(now.getTime() - ctx.config.nodeOfflineAfterSeconds * 1000);
  return withChanges(ctx, async (q, changes) => {
    const { rows } = await q.query<{ id: string; hostname: string }>(
      "UPDATE nodes SET state = 'offline' WHERE state = 'online' AND (last_seen IS NULL OR last_seen < $1) RETURNING id, hostname",
      [cutoff],
    );
    for (const n of rows) await changes.record(q, { type: 'node.offline', node: n.id, data: { hostname: n.hostname, silent_seconds: ctx.config.nodeOfflineAfterSeconds } });
    return rows.map((r) => r.id);
  });
}

/** Deletes usage samples older than usageRetentionHours; returns how many went. Safe on many replicas. */
export async function pruneUsageSamples(ctx: RegistryContext, now = new Date()): Promise<number> {
  const cutoff = new Date(now.getTime() - ctx.config.usageRetentionHours * 3600_000);
  const { rowCount } = await ctx.db.query('DELETE FROM sliver_usage WHERE at < $1', [cutoff]);
  if (rowCount) ctx.log.debug({ samples: rowCount, before: cutoff.toISOString() }, 'old usage samples pruned');
  return rowCount;
}

/** Starts every sweep; returns the function that stops them. */
export function startSweeps(ctx: RegistryContext): () => void {
  const guard = (name: string, fn: () => Promise<unknown>) => async () => {
    try {
      await fn();
    } catch (err) {
      ctx.log.error({ err, sweep: name }, 'sweep failed; it runs again on schedule');
    }
  };
  const tasks = [
    cron.schedule('* * * * *', guard('expiry', () => sweepExpiredSlices(ctx)), { noOverlap: true, name: 'slice-expiry' }),
    cron.schedule('*/15 * * * * *', guard('liveness', () => sweepOfflineNodes(ctx)), { noOverlap: true, name: 'node-liveness' }),
    // Hourly, off the top of the hour when other jobs tend to run.
    cron.schedule('17 * * * *', guard('usage-retention', () => pruneUsageSamples(ctx)), { noOverlap: true, name: 'usage-retention' }),
  ];
  return () => {
    for (const t of tasks) void t.stop();
  };
}
