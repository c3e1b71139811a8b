// Prometheus metrics at /metrics: request counts and latencies, plus testbed gauges read at scrape.
import type { FastifyInstance } from 'fastify';
import { AppError } from '@planetlite/core';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function registerMetrics(app: FastifyInstance): void {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'planetlite_http_requests_total', help: 'HTTP requests answered', labelNames: ['method', 'route', 'status'], registers: [registry] });
  const latency = new Histogram({
    name: 'planetlite_http_request_duration_seconds',
    help: 'HTTP request latency',
    labelNames: ['method', 'route'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [registry],
  });
  const { db } = app.ctx;
  const gauge = (name: string, help: string, labelNames: string[], sql: string, label?: string) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      async collect() {
        this.reset();
        const { rows } = await db.query<{ k: string; n: number }>(sql);
        for (const r of rows) (label ? this.set({ [label]: r.k }, r.n) : this.set(r.n));
      },
    });
  gauge('planetlite_slices', 'Slices by state', ['state'], 'SELECT state AS k, count(*)::int AS n FROM slices GROUP BY state', 'state');
  gauge('planetlite_slivers', 'Slivers by state', ['state'], 'SELECT state AS k, count(*)::int AS n FROM slivers GROUP BY state', 'state');
  gauge('planetlite_nodes', 'Nodes by state', ['state'], 'SELECT state AS k, count(*)::int AS n FROM nodes GROUP BY state', 'state');
  gauge('planetlite_sites', 'Sites', [], "SELECT '' AS k, count(*)::int AS n FROM sites");

  // Where requests wait: for a PostgreSQL connection, in the nodes' lane of the pool, and
  // reports for their turn to be written. Read from memory at each scrape, by state.
  const queue = (name: string, help: string, read: () => Record<string, number> | null) =>
    new Gauge({
      name,
      help,
      labelNames: ['state'],
      registers: [registry],
      collect() {
        for (const [state, n] of Object.entries(read() ?? {})) this.set({ state }, n);
      },
    });
  queue('planetlite_db_pool', "This replica's PostgreSQL connections by state, and the queries waiting for one", () => {
    const p = db.poolState?.();
    return p ? { busy: p.connections - p.idle, idle: p.idle, waiting: p.waiting } : null;
  });
  queue('planetlite_node_queries', "Nodes' statements and transactions running, and waiting for their lane of the pool", () => ({
    running: app.ctx.nodeDb.active,
    waiting: app.ctx.nodeDb.waiting,
  }));
  queue('planetlite_report_writes', "Nodes' reports being written, and waiting for their turn (PLANETLITE_REPORT_WRITES at once)", () => ({
    writing: app.ctx.reportWrites.activeCount,
    waiting: app.ctx.reportWrites.pendingCount,
  }));

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ method: req.method, route, status: reply.statusCode });
    latency.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  // ?name=… (repeatable) answers only those metrics: a close look at the queues, often, without
  // the gauges that count every sliver (a scan of the table per scrape).
  app.get<{ Querystring: { name?: string | string[] } }>('/metrics', { schema: { hide: true } }, async (req, reply) => {
    reply.type(registry.contentType);
    const names = req.query.name === undefined ? null : [req.query.name].flat();
    if (!names) return registry.metrics();
    const unknown = names.filter((n) => !registry.getSingleMetric(n));
    if (unknown.length) throw new AppError('invalid_request', `no metric named ${unknown.join(', ')}; GET /metrics lists them all`);
    return (await Promise.all(names.map((n) => registry.getSingleMetricAsString(n)))).join('\n') + '\n';
  });
}
