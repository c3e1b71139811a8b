// The registry as a service: OpenAPI and docs, health, metrics, first-start bootstrap,
// migrations, node liveness, node reports.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, migrations } from '@planetlite/db';
import { ADMIN, call, freshDatabase, login, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';
import { sweepOfflineNodes } from '../src/index.js';

let t: TestApp;
let w: World;
beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app);
});
afterAll(() => t.close());

describe('registry service', () => {
  it('publishes OpenAPI 3 with every v1 route and browsable docs', async () => {
    const spec = await ok(t.app, 200, 'GET', '/openapi.json');
    expect(spec.openapi).toMatch(/^3\./);
    const paths = Object.keys(spec.paths);
    for (const p of [
      '/v1/auth/login', '/v1/users/me', '/v1/sites', '/v1/sites/{login_base}', '/v1/users', '/v1/users/{id}/keys',
      '/v1/sites/{login_base}/enrollment-tokens', '/v1/nodes/enroll', '/v1/nodes', '/v1/nodes/{id}', '/v1/images',
      '/v1/slices', '/v1/slices/{name}', '/v1/slices/{name}/members', '/v1/slices/{name}/renew', '/v1/slices/{name}/slivers',
      '/v1/slivers/{id}', '/v1/slivers/{id}/actions', '/v1/events', '/v1/events/stream',
      '/v1/nodes/{id}/desired-state', '/v1/nodes/{id}/observed-state', '/v1/nodes/{id}/events', '/healthz',
    ]) expect(paths, p).toContain(p);
    expect(spec.paths['/v1/slices'].post.responses['201']).toBeDefined();
    expect(spec.paths['/v1/slices'].post.requestBody.content['application/json'].schema.properties.name.pattern).toBeDefined();
    const docs = await call(t.app, 'GET', '/docs/');
    expect(docs.status).toBe(200);
    expect(String(docs.body)).toMatch(/swagger/i);
  });

  it('answers /healthz without auth and /metrics in Prometheus text', async () => {
    const h = await ok(t.app, 200, 'GET', '/healthz');
    expect(h).toMatchObject({ status: 'ok', database: t.db.kind });
    const m = await call(t.app, 'GET', '/metrics');
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toMatch(/text\/plain/);
    expect(String(m.body)).toMatch(/^planetlite_slivers\{state="pending"\} 1$/m);
    expect(String(m.body)).toMatch(/planetlite_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/);
    expect(String(m.body)).toMatch(/^planetlite_report_writes\{state="waiting"\} 0$/m);
    expect(String(m.body)).toMatch(/^planetlite_node_queries\{state="waiting"\} 0$/m);
    // Some by name: those, and nothing else (no count of slivers).
    const some = String((await call(t.app, 'GET', '/metrics?name=planetlite_report_writes&name=planetlite_http_requests_total')).body);
    expect(some).toMatch(/^planetlite_report_writes\{state="writing"\} 0$/m);
    expect(some).toMatch(/^planetlite_http_requests_total\{/m);
    expect(some).not.toMatch(/planetlite_slivers/);
    const bad = await call(t.app, 'GET', '/metrics?name=planetlite_nonesuch');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'invalid_request', detail: expect.stringContaining('planetlite_nonesuch') });
  });

  it('creates the admin once: a restart with other credentials changes nothing', async () => {
    const db = await freshDatabase();
    try {
      const one = await testApp({ db });
      await one.close();
      const two = await testApp({ db, config: { adminEmail: 'other@x.test', adminPassword: 'other-password' } });
      expect(await login(two.app, ADMIN.email, ADMIN.password)).toMatch(/^plu_/);
      expect((await call(two.app, 'POST', '/v1/auth/login', null, { email: 'other@x.test', password: 'other-password' })).status).toBe(401);
      await two.close();
      const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM schema_migrations');
      expect(rows[0]!.n).toBe(migrations().length);
      expect(await migrate(db)).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it('stores credentials only as hashes', async () => {
    const { rows } = await t.db.query<{ password_hash: string }>('SELECT password_hash FROM users WHERE email = $1', [ADMIN.email]);
    expect(rows[0]!.password_hash).toMatch(/^scrypt\$/);
    expect(rows[0]!.password_hash).not.toContain(ADMIN.password);
    const keys = await t.db.query<{ key_hash: string }>('SELECT key_hash FROM nodes');
    for (const k of keys.rows) expect(k.key_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(keys.rows.map((k) => k.key_hash)).not.toContain(w.node);
  });

  it('marks silent nodes offline and back online when they call in', async () => {
    await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user)).state).toBe('online');
    const later = new Date(Date.now() + 3600_000);
    expect(await sweepOfflineNodes(t.app.ctx, later)).toContain(w.ids.node);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user)).state).toBe('offline');
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, {
      slivers: [],
      images: [{ image: 'debian12', state: 'ready', progress: 1, bytes_from_peers: 100, bytes_from_webseed: 5 }],
    });
    const node = await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user);
    expect(node.state).toBe('online');
    expect(node.images).toEqual([{ image: 'debian12', state: 'ready', progress: 1, bytes_from_peers: 100, bytes_from_webseed: 5 }]);
    const types = (await ok(t.app, 200, 'GET', `/v1/events?node=${w.ids.node}`, w.admin)).events.map((e: { type: string }) => e.type);
    expect(types).toEqual(expect.arrayContaining(['node.enrolled', 'node.online', 'node.offline']));
  });

  it('records node events such as watchdog.reset against the sliver and its slice', async () => {
    const ev = await ok(t.app, 201, 'POST', `/v1/nodes/${w.ids.node}/events`, w.node, { type: 'watchdog.reset', sliver: w.ids.sliver, data: { rss_mb: 900, limit_mb: 512 } });
    expect(ev).toMatchObject({ type: 'watchdog.reset', slice: w.slice, sliver: w.ids.sliver, node: w.ids.node });
    const other = await call(t.app, 'POST', `/v1/nodes/${w.ids.nodeB}/events`, w.nodeB, { type: 'watchdog.reset', sliver: w.ids.sliver });
    expect(other.status).toBe(404);
    const seen = await ok(t.app, 200, 'GET', `/v1/events?type=watchdog.reset`, w.user);
    expect(seen.events).toHaveLength(1);
  });

  it('lets a node re-enroll under its hostname with a new key, the old key dead', async () => {
    const tok = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.tech, { ttl_seconds: 600 });
    const again = await ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, {
      token: tok.token, hostname: `node1.${w.site}.test`, address: '192.0.2.11',
      capabilities: { lxc: true, kvm: true, kvm_accel: 'tcg' }, resources: { cpus: 4, memory_mb: 8192, disk_mb: 40000 },
    });
    expect(again.node_id).toBe(w.ids.node);
    expect((await call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node)).status).toBe(401);
    const doc = await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, again.node_key);
    expect(doc.address).toBe('192.0.2.11');
    const sliver = await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.user);
    expect(sliver.ssh.host).toBe('192.0.2.11');
    // Another site cannot take the hostname over.
    const tokB = await ok(t.app, 201, 'POST', `/v1/sites/${w.otherSite}/enrollment-tokens`, w.admin, {});
    const steal = await call(t.app, 'POST', '/v1/nodes/enroll', null, {
      token: tokB.token, hostname: `node1.${w.site}.test`, address: '192.0.2.12',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 64, disk_mb: 64 },
    });
    expect(steal.status).toBe(409);
  });
});

describe('a registry closing with long-polls waiting', () => {
  it('answers them 304 at once without touching the database it is about to close', async () => {
    const db = await freshDatabase();
    let afterClose = 0;
    let closing = false;
    // The same database, counting what is asked of it once close() has begun.
    const counting = Object.assign(Object.create(db) as typeof db, {
      query: (...a: Parameters<typeof db.query>) => ((afterClose += closing ? 1 : 0), db.query(...a)),
      transaction: (...a: Parameters<typeof db.transaction>) => ((afterClose += closing ? 1 : 0), db.transaction(...a)),
    });
    const own = await testApp({ db: counting });
    try {
      const world = await makeWorld(own.app);
      const first = await call(own.app, 'GET', `/v1/nodes/${world.ids.node}/desired-state`, world.node);
      const poll = call(own.app, 'GET', `/v1/nodes/${world.ids.node}/desired-state?wait=30`, world.node, undefined, { 'if-none-match': String(first.headers.etag) });
      await new Promise((r) => setTimeout(r, 300));
      closing = true;
      const closed = own.close();
      const woke = await poll;
      await closed;
      expect([woke.status, woke.headers.etag]).toEqual([304, first.headers.etag]);
      expect(afterClose).toBe(0);
    } finally {
      await db.close();
    }
  });
});
