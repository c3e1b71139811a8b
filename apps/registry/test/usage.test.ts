// Per-sliver accounting: samples taken from node reports (about one an interval), the latest on the
// sliver, the history endpoint with its window and authorisation, and the retention sweep.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';
import { ConfigError, loadConfig } from '../src/index.js';
import { pruneUsageSamples } from '../src/services/sweeps.js';

const HOUR = 3600_000;
let t: TestApp;
let w: World;
let n = 0;

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app);
});
afterAll(() => t.close());

/** A new slice of site a with one sliver on the site's node; the member of the world's slice joins it. */
async function freshSliver(): Promise<string> {
  const name = `${w.site}_u${++n}`;
  await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'usage', url: 'https://example.org' });
  await ok(t.app, 200, 'POST', `/v1/slices/${name}/members`, w.pi, { user_id: w.ids.user });
  return (await ok(t.app, 202, 'POST', `/v1/slices/${name}/slivers`, w.pi, { node_id: w.ids.node })).id as string;
}

async function report(slivers: unknown[]): Promise<void> {
  await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers });
}

async function sampleCount(sliver: string): Promise<number> {
  const { rows } = await t.db.query<{ n: number }>('SELECT count(*)::int AS n FROM sliver_usage WHERE sliver = $1', [sliver]);
  return rows[0]!.n;
}

/** Moves a sliver's samples into the past, as if the reports had come that much earlier. */
async function age(sliver: string, seconds: number): Promise<void> {
  await t.db.query("UPDATE sliver_usage SET at = at - $2::float8 * interval '1 second' WHERE sliver = $1", [sliver, seconds]);
}

async function insertSample(sliver: string, at: Date, cpu: number | null, extra: { disk?: number | null } = {}): Promise<void> {
  await t.db.query(
    'INSERT INTO sliver_usage (sliver, at, cpu_seconds, memory_bytes, disk_bytes, net_rx_bytes, net_tx_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7)',
    [sliver, at, cpu, 1 << 20, extra.disk === undefined ? 5 << 20 : extra.disk, 1000, 2000],
  );
}

const usageOf = (cpu: number, extra: Record<string, number> = {}) => ({
  cpu_seconds: cpu,
  memory_bytes: 64 << 20,
  disk_bytes: 300 << 20,
  net_rx_bytes: 10_000,
  net_tx_bytes: 20_000,
  ...extra,
});

describe('usage samples from node reports', () => {
  it('take one sample per sliver per interval in one report, and the sliver carries the latest incl. disk_bytes', async () => {
    const a = w.ids.sliver;
    const b = await freshSliver();
    const before = Date.now();
    await report([
      { id: a, state: 'running', ...usageOf(1.5) },
      { id: b, state: 'running', ...usageOf(0.25, { disk_bytes: 7 << 20 }) },
    ]);
    expect([await sampleCount(a), await sampleCount(b)]).toEqual([1, 1]);

    // A second report right away moves the latest figures but takes no sample.
    await report([
      { id: a, state: 'running', ...usageOf(2.5, { disk_bytes: 301 << 20 }) },
      { id: b, state: 'running', ...usageOf(0.5) },
    ]);
    expect([await sampleCount(a), await sampleCount(b)]).toEqual([1, 1]);
    const sliver = await ok(t.app, 200, 'GET', `/v1/slivers/${a}`, w.user);
    expect(sliver.usage).toMatchObject({ cpu_seconds: 2.5, memory_bytes: 64 << 20, disk_bytes: 301 << 20, net_rx_bytes: 10_000, net_tx_bytes: 20_000 });
    expect(Date.parse(sliver.usage.at)).toBeGreaterThanOrEqual(before - 1000);
    expect(sliver.usage.at).toBe(new Date(sliver.usage.at).toISOString());

    // Half an interval later: still none. A whole interval later: one more, for both slivers.
    await age(a, 30);
    await age(b, 30);
    await report([{ id: a, state: 'running', ...usageOf(3) }, { id: b, state: 'running', ...usageOf(1) }]);
    expect([await sampleCount(a), await sampleCount(b)]).toEqual([1, 1]);
    await age(a, 31);
    await age(b, 31);
    await report([{ id: a, state: 'running', ...usageOf(4) }, { id: b, state: 'running', ...usageOf(1.5) }]);
    expect([await sampleCount(a), await sampleCount(b)]).toEqual([2, 2]);

    const history = await ok(t.app, 200, 'GET', `/v1/slivers/${a}/usage`, w.user);
    expect(history.samples.map((s: { cpu_seconds: number }) => s.cpu_seconds)).toEqual([1.5, 4]);
    expect(history.samples[1]).toMatchObject({ memory_bytes: 64 << 20, disk_bytes: 300 << 20, net_rx_bytes: 10_000, net_tx_bytes: 20_000 });
  });

  it('take none for a sliver reported without figures, and a report without figures keeps the latest', async () => {
    const s = await freshSliver();
    await report([{ id: s, state: 'running' }]);
    expect(await sampleCount(s)).toBe(0);
    expect((await ok(t.app, 200, 'GET', `/v1/slivers/${s}`, w.user)).usage).toBeNull();

    await report([{ id: s, state: 'running', memory_bytes: 1234 }]);
    expect(await sampleCount(s)).toBe(1);
    await report([{ id: s, state: 'stopped' }]);
    const after = await ok(t.app, 200, 'GET', `/v1/slivers/${s}`, w.user);
    expect(after.state).toBe('stopped');
    expect(after.usage).toMatchObject({ memory_bytes: 1234 });
    const [sample] = (await ok(t.app, 200, 'GET', `/v1/slivers/${s}/usage`, w.user)).samples;
    // What the node did not say stays null rather than zero.
    expect(sample).toEqual({ at: expect.any(String), cpu_seconds: null, memory_bytes: 1234, disk_bytes: null, net_rx_bytes: null, net_tx_bytes: null });
  });

  it('refuse a negative or fractional byte count', async () => {
    for (const bad of [{ disk_bytes: -1 }, { disk_bytes: 1.5 }, { net_rx_bytes: 2 ** 60 }]) {
      const r = await call(t.app, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [{ id: w.ids.sliver, state: 'running', ...bad }] });
      expect(r.status, JSON.stringify(bad)).toBe(400);
      expect(r.body.detail).toMatch(new RegExp(Object.keys(bad)[0]!));
    }
  });

  it('go with their sliver', async () => {
    const s = await freshSliver();
    await report([{ id: s, state: 'running', ...usageOf(1) }]);
    expect(await sampleCount(s)).toBe(1);
    await ok(t.app, 202, 'DELETE', `/v1/slivers/${s}`, w.user);
    await report([{ id: s, state: 'deleted' }]);
    expect((await call(t.app, 'GET', `/v1/slivers/${s}`, w.user)).status).toBe(404);
    expect(await sampleCount(s)).toBe(0);
  });
});

describe('GET /v1/slivers/{id}/usage', () => {
  let s: string;
  const now = Date.now();
  beforeAll(async () => {
    s = await freshSliver();
    // Inserted out of order: the answer must sort them.
    await insertSample(s, new Date(now - 1 * HOUR), 30);
    await insertSample(s, new Date(now - 30 * HOUR), 1);
    await insertSample(s, new Date(now - 3 * HOUR), 10, { disk: null });
    await insertSample(s, new Date(now - 2 * HOUR), 20);
  });

  it('answers the last 24 hours oldest first by default', async () => {
    const h = await ok(t.app, 200, 'GET', `/v1/slivers/${s}/usage`, w.user);
    expect(h).toMatchObject({ sliver: s, interval_seconds: 60, truncated: false });
    expect(h.samples.map((x: { at: string }) => x.at)).toEqual([3, 2, 1].map((k) => new Date(now - k * HOUR).toISOString()));
    expect(h.samples.map((x: { cpu_seconds: number }) => x.cpu_seconds)).toEqual([10, 20, 30]);
    expect(h.samples[0]).toEqual({ at: expect.any(String), cpu_seconds: 10, memory_bytes: 1 << 20, disk_bytes: null, net_rx_bytes: 1000, net_tx_bytes: 2000 });
    const span = Date.parse(h.until) - Date.parse(h.since);
    expect(span).toBe(24 * HOUR);
    expect(Math.abs(Date.parse(h.until) - Date.now())).toBeLessThan(60_000);
  });

  it('keeps to since and until', async () => {
    const since = new Date(now - 2.5 * HOUR).toISOString();
    const until = new Date(now - 1.5 * HOUR).toISOString();
    const h = await ok(t.app, 200, 'GET', `/v1/slivers/${s}/usage?since=${since}&until=${until}`, w.user);
    expect(h.samples.map((x: { cpu_seconds: number }) => x.cpu_seconds)).toEqual([20]);
    expect(h).toMatchObject({ since, until });
    const all = await ok(t.app, 200, 'GET', `/v1/slivers/${s}/usage?since=${new Date(now - 48 * HOUR).toISOString()}`, w.user);
    expect(all.samples.map((x: { cpu_seconds: number }) => x.cpu_seconds)).toEqual([1, 10, 20, 30]);
    // A sample exactly at since is inside the window.
    const edge = await ok(t.app, 200, 'GET', `/v1/slivers/${s}/usage?since=${new Date(now - 2 * HOUR).toISOString()}`, w.user);
    expect(edge.samples.map((x: { cpu_seconds: number }) => x.cpu_seconds)).toEqual([20, 30]);
  });

  it('cuts a window with more than 10,000 samples short and says so', async () => {
    const many = await freshSliver();
    await t.db.query(
      `INSERT INTO sliver_usage (sliver, at, cpu_seconds)
       SELECT $1, $2::timestamptz + g * interval '1 second', g FROM generate_series(1, 10001) AS g`,
      [many, new Date(now - 4 * HOUR)],
    );
    const h = await ok(t.app, 200, 'GET', `/v1/slivers/${many}/usage`, w.user);
    expect(h.truncated).toBe(true);
    expect(h.samples).toHaveLength(10_000);
    expect(h.samples[0].cpu_seconds).toBe(1);
    expect(h.samples[9999].cpu_seconds).toBe(10_000);
  });

  it('is for members, the site pi and admins, like the sliver itself', async () => {
    for (const [who, token] of [['member', w.user], ['pi', w.pi], ['admin', w.admin]] as const) {
      expect((await call(t.app, 'GET', `/v1/slivers/${s}/usage`, token)).status, who).toBe(200);
    }
    for (const [who, token] of [['outsider', w.outsider], ['otherPi', w.otherPi], ['tech', w.tech], ['node', w.node]] as const) {
      const r = await call(t.app, 'GET', `/v1/slivers/${s}/usage`, token);
      expect(r.status, who).toBe((await call(t.app, 'GET', `/v1/slivers/${s}`, token)).status);
      expect(r.status, who).toBe(403);
      expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    }
    expect((await call(t.app, 'GET', `/v1/slivers/${s}/usage`, null)).status).toBe(401);
    const unknown = await call(t.app, 'GET', '/v1/slivers/00000000-0000-4000-8000-000000000000/usage', w.admin);
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('not_found');
  });

  it('refuses bad times with a 400 problem naming the field', async () => {
    const cases: Array<[string, RegExp]> = [
      ['since=yesterday', /querystring\.since/],
      ['since=2025-01-01', /querystring\.since/],
      ['since=2025-01-01T00:00:00', /querystring\.since/],
      ['until=2025-13-01T00:00:00Z', /querystring\.until/],
      ['since=2016-12-31T23:59:60Z', /querystring\.since/],
      [`since=${new Date(now).toISOString()}&until=${new Date(now - HOUR).toISOString()}`, /querystring\.since/],
      [`since=${new Date(Date.now() + HOUR).toISOString()}`, /querystring\.since must not be in the future/],
      ['from=2025-01-01T00:00:00Z', /from/],
    ];
    for (const [query, field] of cases) {
      const r = await call(t.app, 'GET', `/v1/slivers/${s}/usage?${query}`, w.user);
      expect(r.status, query).toBe(400);
      expect(r.headers['content-type'], query).toMatch(/^application\/problem\+json/);
      expect(r.body, query).toMatchObject({ status: 400, code: 'invalid_request' });
      expect(r.body.detail, query).toMatch(field);
    }
  });

  it('is in the OpenAPI document', async () => {
    const spec = await ok(t.app, 200, 'GET', '/openapi.json');
    const op = spec.paths['/v1/slivers/{id}/usage']?.get;
    expect(op?.tags).toEqual(['slivers']);
    expect(op?.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(['id', 'since', 'until']));
    expect(op?.responses['200']).toBeDefined();
  });
});

describe('usage retention', () => {
  it('the prune sweep drops samples older than usageRetentionHours and keeps newer ones', async () => {
    const s = await freshSliver();
    const now = new Date();
    await insertSample(s, new Date(now.getTime() - 49 * HOUR), 1);
    await insertSample(s, new Date(now.getTime() - 47 * HOUR), 2);
    await insertSample(s, new Date(now.getTime() - 1 * HOUR), 3);
    const left = async () => (await t.db.query<{ c: number }>('SELECT cpu_seconds AS c FROM sliver_usage WHERE sliver = $1 ORDER BY at', [s])).rows.map((r) => r.c);

    // Nothing else in this file is older than 48 hours, so the count is exactly ours.
    expect(await pruneUsageSamples(t.app.ctx, now)).toBe(1);
    expect(await left()).toEqual([2, 3]);
    expect(await pruneUsageSamples(t.app.ctx, now)).toBe(0);
    // Two hours on, the 47-hour-old sample is past retention too.
    await pruneUsageSamples(t.app.ctx, new Date(now.getTime() + 2 * HOUR));
    expect(await left()).toEqual([3]);
  });

  it('follows the configured retention', async () => {
    const s = await freshSliver();
    const now = new Date();
    await insertSample(s, new Date(now.getTime() - 25 * HOUR), 1);
    await insertSample(s, new Date(now.getTime() - 23 * HOUR), 2);
    const ctx = { ...t.app.ctx, config: { ...t.app.ctx.config, usageRetentionHours: 24 } };
    await pruneUsageSamples(ctx, now);
    const { rows } = await t.db.query<{ c: number }>('SELECT cpu_seconds AS c FROM sliver_usage WHERE sliver = $1', [s]);
    expect(rows.map((r) => r.c)).toEqual([2]);
  });

  it('settings come from the environment: 60 s samples and 48 h by default, at least 24 h kept', () => {
    const base = { listen: '127.0.0.1:0' };
    expect(loadConfig(base, {})).toMatchObject({ usageSampleSeconds: 60, usageRetentionHours: 48 });
    expect(loadConfig(base, { PLANETLITE_USAGE_SAMPLE_SECONDS: '30', PLANETLITE_USAGE_RETENTION_HOURS: '72' })).toMatchObject({ usageSampleSeconds: 30, usageRetentionHours: 72 });
    expect(() => loadConfig(base, { PLANETLITE_USAGE_RETENTION_HOURS: '12' })).toThrow(ConfigError);
    expect(() => loadConfig(base, { PLANETLITE_USAGE_SAMPLE_SECONDS: '0' })).toThrow(/PLANETLITE_USAGE_SAMPLE_SECONDS/);
  });
});
