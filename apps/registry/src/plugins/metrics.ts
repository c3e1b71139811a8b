// Prometheus metrics at /metrics: request counts and latencies, plus testbed gauges read at scrape.
import type { FastifyInstance } from 'fastify';
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

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ method: req.method, route, status: reply.statusCode });
    latency.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    reply.type(registry.contentType);
    return registry.metrics();
  });
}
