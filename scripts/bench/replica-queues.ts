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

type QueueSample = { poolWaiting: number; poolBusy: number; nodesWaiting: number; reportsWaiting: number };

/** One reading of the replica's queues (NaN for what it did not answer). */
export async function readQueues(pool: Pool): Promise<QueueSample> {
  const text = await pool.request({ method: 'GET', path: '/metrics?name=planetlite_db_pool&name=planetlite_node_queries&name=planetlite_report_writes' }).then((r) => r.body.text(), () => '');
  return {
    poolWaiting: value(text, 'planetlite_db_pool', 'waiting'),
    poolBusy: value(text, 'planetlite_db_pool', 'busy'),
    nodesWaiting: value(text, 'planetlite_node_queries', 'waiting'),
    reportsWaiting: value(text, 'planetlite_report_writes', 'waiting'),
  };
}

/** A connection for readQueues to the replica at url (its CA: ca). */
export function queuesPool(url: string, ca: string | null): Pool {
  // As patient as the agents (a replica in a reconnect storm accepts late).
  return new Pool(url, { connections: 1, connect: { timeout: 60_000, ...(ca ? { ca } : {}) } });
}

/** Samples the replica at url (its CA: ca) every everyMs until stop(). */
export function sampleQueues(url: string, ca: string | null, everyMs = 250): { stop: () => Promise<QueueFigures> } {
  const pool = queuesPool(url, ca);
  const seen = { poolWaiting: [] as number[], nodesWaiting: [] as number[], reportsWaiting: [] as number[], poolBusy: [] as number[] };
  let running = true;
  const loop = (async () => {
    while (running) {
      const q = await readQueues(pool);
      for (const k of Object.keys(seen) as Array<keyof QueueSample>) seen[k].push(q[k]);
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
