// Scheduled housekeeping: expire slices past their date, mark silent nodes offline, prune old usage samples.
import cron from 'node-cron';
import type { RegistryConfig } from '../config.js';
import { expiredSliceNames, lockIfExpired } from '../repositories/slices.js';
import { markSilentNodesOffline } from '../repositories/nodes.js';
import { pruneUsageBefore } from '../repositories/usage.js';
import { withChanges, type ChangeDeps } from './changes.js';
import { tearDownSlice } from './slices.js';

/** What the sweeps use. */
export type SweepDeps = ChangeDeps & { config: Pick<RegistryConfig, 'nodeOfflineAfterSeconds' | 'usageRetentionHours'> };

/** Tears down every active slice whose expiry has passed; returns their names. Safe on many replicas. */
export async function sweepExpiredSlices(deps: ChangeDeps, now = new Date()): Promise<string[]> {
  const expired: string[] = [];
  for (const name of await expiredSliceNames(deps.db, now)) {
    await withChanges(deps, async (q, changes) => {
      // Re-check under the row lock: another replica may have swept it meanwhile.
      if (!(await lockIfExpired(q, name, now))) return;
      await tearDownSlice(q, changes, name, 'expired');
      expired.push(name);
    });
  }
  if (expired.length) deps.log.info({ slices: expired }, 'expired slices torn down');
  return expired;
}

/** Nodes marked offline per transaction: row locks are held for one small batch at a time. */
const OFFLINE_BATCH = 200;

/** Marks nodes that have not called in for nodeOfflineAfterSeconds offline; returns their ids. */
export async function sweepOfflineNodes(deps: SweepDeps, now = new Date()): Promise<string[]> {
  const silent = deps.config.nodeOfflineAfterSeconds;
  const cutoff = new Date(now.getTime() - silent * 1000);
  const ids: string[] = [];
  for (;;) {
    const batch = await withChanges(deps, async (q, changes) => {
      const rows = await markSilentNodesOffline(q, cutoff, OFFLINE_BATCH);
      await changes.recordMany(q, rows.map((n) => ({ type: 'node.offline', node: n.id, data: { hostname: n.hostname, silent_seconds: silent } })));
      return rows;
    });
    ids.push(...batch.map((r) => r.id));
    if (batch.length < OFFLINE_BATCH) return ids;
  }
}

const PRUNE_BATCH = 10_000;

/** Deletes usage samples older than usageRetentionHours; returns how many went. Safe on many replicas. */
export async function pruneUsageSamples(deps: SweepDeps, now = new Date()): Promise<number> {
  const cutoff = new Date(now.getTime() - deps.config.usageRetentionHours * 3600_000);
  let pruned = 0;
  // In batches: one DELETE of a day's samples of a large fleet would run for minutes.
  for (;;) {
    const n = await pruneUsageBefore(deps.db, cutoff, PRUNE_BATCH);
    pruned += n;
    if (n < PRUNE_BATCH) break;
  }
  if (pruned) deps.log.debug({ samples: pruned, before: cutoff.toISOString() }, 'old usage samples pruned');
  return pruned;
}

/** Starts every sweep; returns the function that stops them. */
export function startSweeps(deps: SweepDeps): () => void {
  const guard = (name: string, fn: () => Promise<unknown>) => async () => {
    try {
      await fn();
    } catch (err) {
      deps.log.error({ err, sweep: name }, 'sweep failed; it runs again on schedule');
    }
  };
  const tasks = [
    cron.schedule('* * * * *', guard('expiry', () => sweepExpiredSlices(deps)), { noOverlap: true, name: 'slice-expiry' }),
    cron.schedule('*/15 * * * * *', guard('liveness', () => sweepOfflineNodes(deps)), { noOverlap: true, name: 'node-liveness' }),
    // Hourly, off the top of the hour when other jobs tend to run.
    cron.schedule('17 * * * *', guard('usage-retention', () => pruneUsageSamples(deps)), { noOverlap: true, name: 'usage-retention' }),
  ];
  return () => {
    for (const t of tasks) void t.stop();
  };
}
