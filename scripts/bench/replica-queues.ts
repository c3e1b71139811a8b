// Where a replica's requests wait, sampled from its /metrics during a benchmark's window: queries
// waiting for a PostgreSQL connection (planetlite_db_pool{state="waiting"}), nodes' queries waiting
// for their lane of the pool (planetlite_node_queries) and nodes' reports waiting for their turn to
// be written (planetlite_report_writes{state="waiting"}).
import { Pool } from 'undici';

export interface QueueFigures {
  /** Queries waiting for a connection: mean and most seen. */
  poolWaiting: { mean: number; max: number };
  /** Nodes' queries waiting for their lane of the pool: mean and most seen. */
  nodesWaiting: { mean: number; max: number };
  /** Reports waiting for their turn: mean and most seen. */
  reportsWaiting: { mean: number; max: number };
  /** Connections busy: mean. */
  poolBusy: number;
}

const value = (text: string, metric: string, state: string): number => {
  const m = new RegExp(`^${metric}\\{state="${state}"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
};

/** Samples the replica at url (its CA: ca) every everyMs until stop(). */
export function sampleQueues(url: string, ca: string | null, everyMs = 250): { stop: () => Promise<QueueFigures> } {
  const pool = new Pool(url, { connections: 1, ...(ca ? { connect: { ca } } : {}) });
  const seen = { poolWaiting: [] as number[], nodesWaiting: [] as number[], reportsWaiting: [] as number[], poolBusy: [] as number[] };
  let running = true;
  const loop = (async () => {
    while (running) {
      const text = await pool.request({ method: 'GET', path: '/metrics?name=planetlite_db_pool&name=planetlite_node_queries&name=planetlite_report_writes' }).then((r) => r.body.text(), () => '');
      seen.poolWaiting.push(value(text, 'planetlite_db_pool', 'waiting'));
      seen.poolBusy.push(value(text, 'planetlite_db_pool', 'busy'));
      seen.nodesWaiting.push(value(text, 'planetlite_node_queries', 'waiting'));
      seen.reportsWaiting.push(value(text, 'planetlite_report_writes', 'waiting'));
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  const stat = (xs: number[]) => {
    const ok = xs.filter((x) => Number.isFinite(x));
    return { mean: ok.reduce((a, b) => a + b, 0) / Math.max(1, ok.length), max: ok.length ? Math.max(...ok) : NaN };
  };
  return {
    async stop() {
      running = false;
      await loop;
      await pool.close();
      return { poolWaiting: stat(seen.poolWaiting), nodesWaiting: stat(seen.nodesWaiting), reportsWaiting: stat(seen.reportsWaiting), poolBusy: stat(seen.poolBusy).mean };
    },
  };
}
