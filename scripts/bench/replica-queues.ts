// Where a replica's requests wait, sampled from its /metrics during a benchmark's window: queries
// waiting for a PostgreSQL connection (planetlite_db_pool{state="waiting"}), nodes' queries waiting
// for their lane of the pool (planetlite_node_queries) and nodes' reports waiting for their turn to
// be written (planetlite_report_writes{state="waiting"}), and how long its event loop stood still
// (nodejs_eventloop_lag_max_seconds, the longest delay since the last reading; reading
// nodejs_eventloop_lag_seconds is what takes and resets the figures).
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
  /** Every reading (performance.now() of this process): when the lane filled, against what else happened then. */
  timeline: { at: number; nodesWaiting: number; loopLagMs: number; polls: number; reports: number; gcSeconds: number; majorGcSeconds: number }[];
  /** The event loop's longest delay between two readings, ms: mean over readings, and most. */
  loopLagMs: { mean: number; max: number };
}

const value = (text: string, metric: string, state?: string): number => {
  const m = new RegExp(`^${metric}${state === undefined ? '' : `\\{state="${state}"\\}`} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
};

/** The answers to a route so far, every status (planetlite_http_requests_total). */
const answered = (text: string, method: string, route: string): number => {
  let n = 0;
  for (const m of text.matchAll(/^planetlite_http_requests_total\{([^}]*)\} (\S+)$/gm)) {
    if (m[1]!.includes(`method="${method}"`) && m[1]!.includes(`route="${route}"`)) n += Number(m[2]);
  }
  return n;
};

type QueueSample = { poolWaiting: number; poolBusy: number; nodesWaiting: number; reportsWaiting: number; loopLagMs: number; polls: number; reports: number; gcSeconds: number; majorGcSeconds: number };

/** One reading of the replica's queues (NaN for what it did not answer). */
export async function readQueues(pool: Pool): Promise<QueueSample> {
  const text = await pool.request({ method: 'GET', path: '/metrics?name=planetlite_db_pool&name=planetlite_node_queries&name=planetlite_report_writes&name=nodejs_eventloop_lag_seconds&name=nodejs_eventloop_lag_max_seconds&name=planetlite_http_requests_total&name=nodejs_gc_duration_seconds' }).then((r) => r.body.text(), () => '');
  const gc = histogramIn(text, 'nodejs_gc_duration_seconds');
  return {
    poolWaiting: value(text, 'planetlite_db_pool', 'waiting'),
    poolBusy: value(text, 'planetlite_db_pool', 'busy'),
    nodesWaiting: value(text, 'planetlite_node_queries', 'waiting'),
    reportsWaiting: value(text, 'planetlite_report_writes', 'waiting'),
    loopLagMs: value(text, 'nodejs_eventloop_lag_max_seconds') * 1000,
    // Answered polls and reports so far: the differences between readings are the nodes' arrivals.
    polls: text ? answered(text, 'GET', '/v1/nodes/:id/desired-state') : NaN,
    reports: text ? answered(text, 'PUT', '/v1/nodes/:id/observed-state') : NaN,
    // Seconds of garbage collection so far, every kind and major alone.
    gcSeconds: text ? gc.reduce((t, g) => t + g.sum, 0) : NaN,
    majorGcSeconds: text ? gc.filter((g) => g.labels.kind === 'major').reduce((t, g) => t + g.sum, 0) : NaN,
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
  const seen = { poolWaiting: [] as number[], nodesWaiting: [] as number[], reportsWaiting: [] as number[], poolBusy: [] as number[], loopLagMs: [] as number[] };
  const timeline: QueueFigures['timeline'] = [];
  let running = true;
  const loop = (async () => {
    // The first reading's event-loop figures cover everything since the last one (the replica's
    // start, a reconnect storm): dropped.
    await readQueues(pool);
    while (running) {
      const q = await readQueues(pool);
      for (const k of Object.keys(seen) as Array<keyof typeof seen>) seen[k].push(q[k]);
      timeline.push({ at: performance.now(), nodesWaiting: q.nodesWaiting, loopLagMs: q.loopLagMs, polls: q.polls, reports: q.reports, gcSeconds: q.gcSeconds, majorGcSeconds: q.majorGcSeconds });
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
      return { poolWaiting: stat(seen.poolWaiting), nodesWaiting: stat(seen.nodesWaiting), reportsWaiting: stat(seen.reportsWaiting), poolBusy: stat(seen.poolBusy).mean, loopLagMs: stat(seen.loopLagMs), timeline };
    },
  };
}

/** One series of a prom-client histogram: its labels, answers, sum, and how many fell above each bound. */
interface HistogramSeries {
  labels: Record<string, string>;
  count: number;
  sum: number;
  /** Bound (the `le` label, as written) → how many took longer. */
  over: Record<string, number>;
}

/** Every series of the histogram `name` on the replica's /metrics. */
async function readHistogram(pool: Pool, name: string): Promise<HistogramSeries[]> {
  return histogramIn(await pool.request({ method: 'GET', path: `/metrics?name=${name}` }).then((r) => r.body.text(), () => ''), name);
}

/** Every series of the histogram `name` in a /metrics text. */
function histogramIn(text: string, name: string): HistogramSeries[] {
  const series = new Map<string, HistogramSeries & { within: Record<string, number> }>();
  for (const m of text.matchAll(new RegExp(`^${name}_(bucket|sum|count)\\{([^}]*)\\} (\\S+)$`, 'gm'))) {
    const labels = Object.fromEntries([...m[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!]));
    const { le, ...rest } = labels;
    const key = JSON.stringify(rest);
    let s = series.get(key);
    if (!s) series.set(key, (s = { labels: rest, count: 0, sum: 0, over: {}, within: {} }));
    const v = Number(m[3]);
    if (m[1] === 'sum') s.sum = v;
    else if (m[1] === 'count') s.count = v;
    else if (le !== undefined) s.within[le] = v;
  }
  // Buckets count up to their bound: over a bound is the count less the bucket.
  return [...series.values()].map(({ within, ...s }) => ({ ...s, over: Object.fromEntries(Object.entries(within).map(([le, n]) => [le, s.count - n])) }));
}

/** The replica's garbage collections so far, by kind (prom-client's nodejs_gc_duration_seconds):
 * how many, their seconds, and how many took over 0.1 s and over 1 s. */
export type GcFigures = Record<string, { count: number; seconds: number; over100ms: number; over1s: number }>;

export async function readGc(pool: Pool): Promise<GcFigures> {
  const out: GcFigures = {};
  for (const s of await readHistogram(pool, 'nodejs_gc_duration_seconds')) {
    out[s.labels.kind ?? '?'] = { count: s.count, seconds: s.sum, over100ms: s.over['0.1'] ?? 0, over1s: s.over['1'] ?? 0 };
  }
  return out;
}

/** What happened between two readings. */
export function gcBetween(a: GcFigures, b: GcFigures): GcFigures {
  const out: GcFigures = {};
  for (const [kind, g] of Object.entries(b)) {
    const s = a[kind] ?? { count: 0, seconds: 0, over100ms: 0, over1s: 0 };
    out[kind] = { count: g.count - s.count, seconds: g.seconds - s.seconds, over100ms: g.over100ms - s.over100ms, over1s: g.over1s - s.over1s };
  }
  return out;
}

/** How long the replica itself took to answer a route (prom-client's planetlite_http_request_duration_seconds):
 * answers so far, and how many took over 0.5 s and over 1 s, by "METHOD route". */
export type RouteFigures = Record<string, { count: number; over500ms: number; over1s: number }>;

export async function readRoutes(pool: Pool, routes: string[]): Promise<RouteFigures> {
  const out: RouteFigures = Object.fromEntries(routes.map((r) => [r, { count: 0, over500ms: 0, over1s: 0 }]));
  for (const s of await readHistogram(pool, 'planetlite_http_request_duration_seconds')) {
    const route = `${s.labels.method} ${s.labels.route}`;
    if (out[route]) out[route] = { count: s.count, over500ms: s.over['0.5'] ?? 0, over1s: s.over['1'] ?? 0 };
  }
  return out;
}
