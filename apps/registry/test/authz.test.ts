// The authorisation matrix: every route × admin, pi, tech, member, other-site user and pi,
// the node itself, another node, and anonymous.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, call, cleanupKeys, makeWorld, ok, sshPublicKey, testApp, type TestApp, type World } from './helpers.js';

type Who = 'admin' | 'pi' | 'tech' | 'member' | 'outsider' | 'otherPi' | 'node' | 'otherNode' | 'anon';
const EVERYONE: Who[] = ['admin', 'pi', 'tech', 'member', 'outsider', 'otherPi', 'node', 'otherNode', 'anon'];
const USERS: Who[] = ['admin', 'pi', 'tech', 'member', 'outsider', 'otherPi'];

interface Case {
  route: string;
  allowed: Who[];
  /** Makes the request; runs anew for every caller, so mutations get fresh targets. */
  make: (w: World, who: Who) => Promise<{ method: string; url: string; body?: unknown }>;
}

let t: TestApp;
let w: World;
let n = 0;
const uniq = () => ++n;

async function freshSlice(): Promise<string> {
  const name = `${w.site}_m${uniq()}`;
  await ok(t.app, 201, 'POST', '/v1/slices', w.admin, { name, description: 'matrix', url: 'https://example.org' });
  await ok(t.app, 200, 'POST', `/v1/slices/${name}/members`, w.admin, { user_id: w.ids.user });
  return name;
}
async function freshSliver(): Promise<string> {
  const slice = await freshSlice();
  return (await ok(t.app, 202, 'POST', `/v1/slices/${slice}/slivers`, w.admin, { node_id: w.ids.node })).id as string;
}
/** A node of its own at site a, so that draining or revoking it leaves the world's node alone. */
async function freshNode(): Promise<string> {
  const tok = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {});
  const host = `fresh${uniq()}.${w.site}.test`;
  const body = { token: tok.token, hostname: host, address: '192.0.2.50', capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 512, disk_mb: 1024 } };
  return (await ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, body)).node_id as string;
}

const cases: Case[] = [
  { route: 'POST /v1/sites', allowed: ['admin'], make: async () => ({ method: 'POST', url: '/v1/sites', body: { login_base: `new${uniq()}`, name: 'New', max_slices: 1, max_slivers: 1 } }) },
  { route: 'GET /v1/sites', allowed: USERS, make: async () => ({ method: 'GET', url: '/v1/sites' }) },
  { route: 'GET /v1/sites/:lb', allowed: USERS, make: async (w) => ({ method: 'GET', url: `/v1/sites/${w.site}` }) },
  { route: 'PATCH /v1/sites/:lb', allowed: ['admin'], make: async (w) => ({ method: 'PATCH', url: `/v1/sites/${w.site}`, body: { name: `Renamed ${uniq()}` } }) },
  { route: 'POST /v1/users', allowed: ['admin', 'pi'], make: async (w) => ({ method: 'POST', url: '/v1/users', body: { email: `u${uniq()}@x.test`, name: 'U', password: 'password-123', site: w.site, roles: ['user'] } }) },
  { route: 'GET /v1/users', allowed: USERS, make: async () => ({ method: 'GET', url: '/v1/users' }) },
  { route: 'GET /v1/users/me', allowed: USERS, make: async () => ({ method: 'GET', url: '/v1/users/me' }) },
  { route: 'GET /v1/users/:id', allowed: ['admin', 'pi', 'tech', 'member'], make: async (w) => ({ method: 'GET', url: `/v1/users/${w.ids.user}` }) },
  { route: 'GET /v1/users/:id/keys', allowed: ['admin', 'pi', 'tech', 'member'], make: async (w) => ({ method: 'GET', url: `/v1/users/${w.ids.user}/keys` }) },
  { route: 'POST /v1/users/:id/keys', allowed: ['admin', 'member'], make: async (w) => ({ method: 'POST', url: `/v1/users/${w.ids.user}/keys`, body: { key: sshPublicKey() } }) },
  {
    route: 'DELETE /v1/users/:id/keys/:key',
    allowed: ['admin', 'member'],
    make: async (w) => {
      const k = await ok(t.app, 201, 'POST', `/v1/users/${w.ids.user}/keys`, w.admin, { key: sshPublicKey() });
      return { method: 'DELETE', url: `/v1/users/${w.ids.user}/keys/${k.id}` };
    },
  },
  { route: 'POST /v1/sites/:lb/enrollment-tokens', allowed: ['admin', 'pi', 'tech'], make: async (w) => ({ method: 'POST', url: `/v1/sites/${w.site}/enrollment-tokens`, body: {} }) },
  { route: 'GET /v1/sites/:lb/enrollment-tokens', allowed: ['admin', 'pi', 'tech'], make: async (w) => ({ method: 'GET', url: `/v1/sites/${w.site}/enrollment-tokens` }) },
  {
    route: 'DELETE /v1/sites/:lb/enrollment-tokens/:id',
    allowed: ['admin', 'pi', 'tech'],
    make: async (w) => ({ method: 'DELETE', url: `/v1/sites/${w.site}/enrollment-tokens/${(await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {})).id}` }),
  },
  { route: 'POST /v1/nodes/:id/actions', allowed: ['admin', 'pi', 'tech'], make: async () => ({ method: 'POST', url: `/v1/nodes/${await freshNode()}/actions`, body: { action: 'drain' } }) },
  {
    route: 'PATCH /v1/nodes/:id',
    allowed: ['admin', 'pi', 'tech'],
    make: async () => ({ method: 'PATCH', url: `/v1/nodes/${await freshNode()}`, body: { location: { city: `City ${uniq()}`, latitude: 12.5, longitude: -45.25 } } }),
  },
  { route: 'DELETE /v1/nodes/:id/key', allowed: ['admin', 'pi', 'tech'], make: async () => ({ method: 'DELETE', url: `/v1/nodes/${await freshNode()}/key` }) },
  { route: 'POST /v1/nodes/:id/key', allowed: ['node'], make: async (w) => ({ method: 'POST', url: `/v1/nodes/${w.ids.node}/key` }) },
  { route: 'GET /v1/nodes', allowed: USERS, make: async () => ({ method: 'GET', url: '/v1/nodes' }) },
  { route: 'GET /v1/nodes/:id', allowed: [...USERS, 'node'], make: async (w) => ({ method: 'GET', url: `/v1/nodes/${w.ids.node}` }) },
  { route: 'GET /v1/images', allowed: USERS, make: async () => ({ method: 'GET', url: '/v1/images' }) },
  { route: 'POST /v1/slices', allowed: ['admin', 'pi'], make: async (w) => ({ method: 'POST', url: '/v1/slices', body: { name: `${w.site}_new${uniq()}`, description: 'd', url: 'https://example.org' } }) },
  { route: 'GET /v1/slices', allowed: USERS, make: async () => ({ method: 'GET', url: '/v1/slices' }) },
  { route: 'GET /v1/slices/:name', allowed: ['admin', 'pi', 'member'], make: async (w) => ({ method: 'GET', url: `/v1/slices/${w.slice}` }) },
  { route: 'PATCH /v1/slices/:name', allowed: ['admin', 'pi', 'member'], make: async (w) => ({ method: 'PATCH', url: `/v1/slices/${w.slice}`, body: { description: `d${uniq()}` } }) },
  { route: 'POST /v1/slices/:name/members', allowed: ['admin', 'pi'], make: async (w) => ({ method: 'POST', url: `/v1/slices/${await freshSlice()}/members`, body: { user_id: w.ids.tech } }) },
  { route: 'DELETE /v1/slices/:name/members/:id', allowed: ['admin', 'pi'], make: async (w) => ({ method: 'DELETE', url: `/v1/slices/${await freshSlice()}/members/${w.ids.user}` }) },
  {
    route: 'POST /v1/slices/:name/renew',
    allowed: ['admin', 'pi', 'member'],
    make: async () => ({ method: 'POST', url: `/v1/slices/${await freshSlice()}/renew`, body: { expires_at: new Date(Date.now() + 20 * 86400_000).toISOString() } }),
  },
  { route: 'DELETE /v1/slices/:name', allowed: ['admin', 'pi'], make: async () => ({ method: 'DELETE', url: `/v1/slices/${await freshSlice()}` }) },
  { route: 'POST /v1/slices/:name/slivers', allowed: ['admin', 'pi', 'member'], make: async (w) => ({ method: 'POST', url: `/v1/slices/${await freshSlice()}/slivers`, body: { node_id: w.ids.node } }) },
  { route: 'GET /v1/slices/:name/slivers', allowed: ['admin', 'pi', 'member'], make: async (w) => ({ method: 'GET', url: `/v1/slices/${w.slice}/slivers` }) },
  { route: 'GET /v1/slivers/:id', allowed: ['admin', 'pi', 'member'], make: async (w) => ({ method: 'GET', url: `/v1/slivers/${w.ids.sliver}` }) },
  { route: 'POST /v1/slivers/:id/actions', allowed: ['admin', 'pi', 'member'], make: async () => ({ method: 'POST', url: `/v1/slivers/${await freshSliver()}/actions`, body: { action: 'restart' } }) },
  { route: 'DELETE /v1/slivers/:id', allowed: ['admin', 'pi', 'member'], make: async () => ({ method: 'DELETE', url: `/v1/slivers/${await freshSliver()}` }) },
  { route: 'GET /v1/events', allowed: USERS, make: async () => ({ method: 'GET', url: '/v1/events' }) },
  { route: 'GET /v1/nodes/:id/desired-state', allowed: ['node'], make: async (w) => ({ method: 'GET', url: `/v1/nodes/${w.ids.node}/desired-state` }) },
  { route: 'PUT /v1/nodes/:id/observed-state', allowed: ['node'], make: async (w) => ({ method: 'PUT', url: `/v1/nodes/${w.ids.node}/observed-state`, body: { slivers: [] } }) },
  { route: 'POST /v1/nodes/:id/events', allowed: ['node'], make: async (w) => ({ method: 'POST', url: `/v1/nodes/${w.ids.node}/events`, body: { type: 'watchdog.warning', data: { rss_mb: 1 } } }) },
  { route: 'GET /v1/slivers/:id/usage', allowed: ['admin', 'pi', 'member'], make: async (w) => ({ method: 'GET', url: `/v1/slivers/${w.ids.sliver}/usage` }) },
  { route: 'GET /healthz', allowed: EVERYONE, make: async () => ({ method: 'GET', url: '/healthz' }) },
  { route: 'POST /v1/auth/login', allowed: EVERYONE, make: async () => ({ method: 'POST', url: '/v1/auth/login', body: { email: ADMIN.email, password: ADMIN.password } }) },
  {
    route: 'POST /v1/nodes/enroll',
    allowed: EVERYONE, // the one-time token is the credential
    make: async (w) => {
      const tok = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {});
      const body = { token: tok.token, hostname: `enr${uniq()}.${w.site}.test`, address: '192.0.2.51', capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 512, disk_mb: 1024 } };
      return { method: 'POST', url: '/v1/nodes/enroll', body };
    },
  },
];

/**
 * Operations of /openapi.json whose rights another suite tests, because a matrix call would
 * end the callers' own credentials, stream forever, or needs an uploaded image.
 */
const TESTED_ELSEWHERE: Record<string, string> = {
  'POST /v1/auth/logout': 'lifecycle.test.ts: ends the caller\'s own token',
  'DELETE /v1/users/{}/tokens': 'lifecycle.test.ts: ends a user\'s tokens',
  'GET /v1/events/stream': 'below, over real HTTP: a stream that does not end',
  'GET /v1/slivers/{}/console': 'console.test.ts',
  'PUT /v1/nodes/{}/slivers/{}/console': 'console.test.ts',
  'POST /v1/images': 'images.test.ts: admin only, an archive upload',
  'GET /v1/images/{}': 'images.test.ts: needs an uploaded image',
  'GET /v1/images/{}/archive': 'images.test.ts: the web seed, open to nodes and users',
  'HEAD /v1/images/{}/archive': 'images.test.ts: the web seed, open to nodes and users',
  'GET /ca.pem': 'public by design (the CA certificate nodes and users pin); absent on plain HTTP',
};

/** "GET /v1/slices/:name" and "GET /v1/slices/{name}" both become "GET /v1/slices/{}". */
const routeKey = (route: string) => route.replace(/:[a-z_]+|\{[a-z_]+\}/g, '{}');

function tokenOf(who: Who): string | null {
  const map: Record<Who, string | null> = {
    admin: w.admin, pi: w.pi, tech: w.tech, member: w.user, outsider: w.outsider, otherPi: w.otherPi, node: w.node, otherNode: w.nodeB, anon: null,
  };
  return map[who];
}

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app, { maxSlices: 1000, maxSlivers: 1000 });
});
afterAll(async () => {
  await t.close();
  cleanupKeys();
});

describe('authorisation matrix', () => {
  it('has a row for every operation of /openapi.json', async () => {
    const spec = await ok(t.app, 200, 'GET', '/openapi.json');
    const rows = new Set([...cases.map((c) => routeKey(c.route)), ...Object.keys(TESTED_ELSEWHERE)]);
    const operations = Object.entries(spec.paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) => Object.keys(ops).map((m) => routeKey(`${m.toUpperCase()} ${path}`)));
    expect(operations.filter((op) => !rows.has(op)), 'operations without a row in the authorisation matrix').toEqual([]);
    // And no row for an operation that is gone.
    expect([...rows].filter((r) => !operations.includes(r)), 'matrix rows for operations not in /openapi.json').toEqual([]);
  });

  for (const c of cases) {
    it(c.route, async () => {
      const got: Record<string, number> = {};
      const want: Record<string, number | string> = {};
      for (const who of EVERYONE) {
        const req = await c.make(w, who);
        const r = await call(t.app, req.method, req.url, tokenOf(who), req.body);
        const allowed = c.allowed.includes(who);
        got[who] = allowed ? (r.status < 400 ? 0 : r.status) : r.status;
        want[who] = allowed ? 0 : who === 'anon' ? 401 : 403;
        if (r.status >= 400) expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
      }
      // 0 stands for "allowed and succeeded"; a table diff names every wrong cell at once.
      expect(got).toEqual(want);
    });
  }

  it('GET /v1/events/stream', async () => {
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = t.app.server.address() as import('node:net').AddressInfo;
    const got: Record<string, number> = {};
    const want: Record<string, number> = {};
    for (const who of EVERYONE) {
      const stop = new AbortController();
      const token = tokenOf(who);
      const res = await fetch(`http://127.0.0.1:${port}/v1/events/stream`, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: stop.signal });
      got[who] = res.status;
      want[who] = USERS.includes(who) ? 200 : who === 'anon' ? 401 : 403;
      stop.abort();
      await res.body?.cancel().catch(() => undefined);
    }
    expect(got).toEqual(want);
  });

  it('a bad or expired token is 401 with a problem, not anonymous access', async () => {
    const r = await call(t.app, 'GET', '/v1/users/me', 'plu_notarealtoken');
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('token_invalid');
    await t.db.query("UPDATE auth_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1", [w.ids.tech]);
    // Time moved on by a write outside the API: the replica is told, as the API's own writes tell it
    // (a token that runs out by itself leaves the replica's memory at its expiry: principals.test.ts).
    await t.app.ctx.principals.forget({ user: w.ids.tech });
    const r2 = await call(t.app, 'GET', '/v1/users/me', w.tech);
    expect(r2.status).toBe(401);
  });

  it('a node key only opens its own paths', async () => {
    expect((await call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.nodeB)).status).toBe(403);
    expect((await call(t.app, 'GET', `/v1/nodes/${w.ids.nodeB}/desired-state`, w.nodeB)).status).toBe(200);
    expect((await call(t.app, 'GET', '/v1/slices', w.node)).status).toBe(403);
  });

  it('lists show only what the caller may see', async () => {
    const asOutsider = await ok(t.app, 200, 'GET', '/v1/slices', w.outsider);
    expect(asOutsider.slices.map((s: { name: string }) => s.name)).not.toContain(w.slice);
    const asMember = await ok(t.app, 200, 'GET', '/v1/slices', w.user);
    expect(asMember.slices.map((s: { name: string }) => s.name)).toContain(w.slice);
    const eventsOutsider = await ok(t.app, 200, 'GET', `/v1/events?slice=${w.slice}`, w.otherPi);
    expect(eventsOutsider.events).toEqual([]);
    const eventsMember = await ok(t.app, 200, 'GET', `/v1/events?slice=${w.slice}`, w.user);
    expect(eventsMember.events.length).toBeGreaterThan(0);
    const users = await ok(t.app, 200, 'GET', '/v1/users', w.user);
    expect(users.users.map((u: { id: string }) => u.id)).toEqual([w.ids.user]);
  });

  it('a pi cannot grant admin or add users to another site', async () => {
    const r = await call(t.app, 'POST', '/v1/users', w.pi, { email: `x${uniq()}@x.test`, name: 'X', password: 'password-123', site: w.site, roles: ['admin'] });
    expect(r.status).toBe(403);
    const r2 = await call(t.app, 'POST', '/v1/users', w.pi, { email: `x${uniq()}@x.test`, name: 'X', password: 'password-123', site: w.otherSite, roles: ['user'] });
    expect(r2.status).toBe(403);
  });
});
