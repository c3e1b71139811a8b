// Bad input on every write route: a clear problem+json 4xx that names the field, and nothing changed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, makeWorld, testApp, type TestApp, type World } from './helpers.js';

let t: TestApp;
let w: World;

beforeAll(async () => {
  t = await testApp({ config: { bodyLimitBytes: 4096 } });
  w = await makeWorld(t.app);
});
afterAll(() => t.close());

/** Row counts of every table a write could touch. */
async function snapshot(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of ['sites', 'users', 'ssh_keys', 'nodes', 'enrollment_tokens', 'slices', 'slice_members', 'slivers', 'events']) {
    const { rows } = await t.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
    out[table] = rows[0]!.n;
  }
  const { rows } = await t.db.query("SELECT string_agg(state || desired || restart_seq, ',' ORDER BY id) AS s FROM slivers");
  out[`slivers:${String(rows[0]?.s)}`] = 1;
  return out;
}

interface Write {
  route: string;
  method: string;
  url: (w: World) => string;
  token: (w: World) => string | null;
  /** Bodies that must be refused, each with a word the detail must contain. */
  bad: Array<[unknown, RegExp]>;
}

const writes: Write[] = [
  { route: 'POST /v1/auth/login', method: 'POST', url: () => '/v1/auth/login', token: () => null, bad: [[{ email: 'a@b.c' }, /password/], [{ email: 1, password: 'x' }, /email/]] },
  {
    route: 'POST /v1/sites', method: 'POST', url: () => '/v1/sites', token: (w) => w.admin,
    bad: [
      [{ login_base: 'Bad-Name', name: 'x', max_slices: 1, max_slivers: 1 }, /login_base/],
      [{ login_base: 'okname', name: 'x', max_slices: -1, max_slivers: 1 }, /max_slices/],
      [{ login_base: 'okname', name: 'x', max_slices: 1.5, max_slivers: 1 }, /max_slices/],
      [{ login_base: 'okname', name: 'x', max_slices: '1', max_slivers: 1 }, /max_slices/],
      [{ login_base: 'okname', name: 'x', max_slices: 1 }, /max_slivers/],
    ],
  },
  { route: 'PATCH /v1/sites/:lb', method: 'PATCH', url: (w) => `/v1/sites/${w.site}`, token: (w) => w.admin, bad: [[{}, /body/], [{ enabled: 'yes' }, /enabled/], [{ login_base: 'x' }, /login_base/]] },
  {
    route: 'POST /v1/users', method: 'POST', url: () => '/v1/users', token: (w) => w.admin,
    bad: [
      [{ email: 'not-an-email', name: 'n', password: 'password-1', site: 'sitea1', roles: ['user'] }, /email/],
      [{ email: 'a@b.test', name: 'n', password: 'short', site: 'sitea1', roles: ['user'] }, /password/],
      [{ email: 'a@b.test', name: 'n', password: 'password-1', site: 'sitea1', roles: ['root'] }, /roles/],
      [{ email: 'a@b.test', name: 'n', password: 'password-1', site: 'sitea1', roles: [] }, /roles/],
    ],
  },
  {
    route: 'POST /v1/users/:id/keys', method: 'POST', url: (w) => `/v1/users/${w.ids.user}/keys`, token: (w) => w.user,
    bad: [
      [{ key: 'ssh-ed25519 not-base64!!' }, /base64/],
      [{ key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJunk' }, /valid/],
      [{ key: 'ssh-dss AAAAB3NzaC1kc3MAAACBAP' }, /not supported/],
      [{ key: 'just some text' }, /key/],
      [{ key: '' }, /key/],
      [{ key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvY4Kzq3rYx1pQ1j3YF+yT4n0kQm0mW0lX5g6b1iGzK a\nssh-rsa AAAA' }, /single/],
    ],
  },
  { route: 'POST /v1/sites/:lb/enrollment-tokens', method: 'POST', url: (w) => `/v1/sites/${w.site}/enrollment-tokens`, token: (w) => w.admin, bad: [[{ ttl_seconds: 5 }, /ttl_seconds/], [{ ttl: 60 }, /ttl/]] },
  {
    route: 'POST /v1/nodes/enroll', method: 'POST', url: () => '/v1/nodes/enroll', token: () => null,
    bad: [
      [{ token: 'ple_x', hostname: 'bad host', address: '192.0.2.1', capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 1, disk_mb: 1 } }, /hostname/],
      [{ token: 'ple_x', hostname: 'n.test', address: 'nowhere', capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 1, disk_mb: 1 } }, /address/],
      [{ token: 'ple_x', hostname: 'n.test', address: '192.0.2.1', capabilities: { lxc: true, kvm: false, kvm_accel: 'hvf' }, resources: { cpus: 1, memory_mb: 1, disk_mb: 1 } }, /kvm_accel/],
      [{ token: 'ple_x', hostname: 'n.test', address: '192.0.2.1', capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 0, memory_mb: 1, disk_mb: 1 } }, /cpus/],
    ],
  },
  {
    route: 'POST /v1/slices', method: 'POST', url: () => '/v1/slices', token: (w) => w.pi,
    bad: [
      [{ name: 'nounderscore', description: 'd', url: 'u' }, /name/],
      [{ name: 'sitea1_x', description: 'd' }, /url/],
      [{ name: 'sitea1_x', description: 'd', url: 'u', kind: 'vm' }, /kind/],
      [{ name: 'sitea1_x', description: 'd', url: 'u', resources: { memory_mb: 1 } }, /memory_mb/],
      [{ name: 'sitea1_x', description: 'd', url: 'u', resources: { gpus: 1 } }, /gpus/],
      [{ name: 'sitea1_x', description: 'd', url: 'u', image: '../etc' }, /image/],
    ],
  },
  { route: 'PATCH /v1/slices/:name', method: 'PATCH', url: (w) => `/v1/slices/${w.slice}`, token: (w) => w.pi, bad: [[{ kind: 'kvm' }, /kind/], [{ description: 5 }, /description/]] },
  { route: 'POST /v1/slices/:name/members', method: 'POST', url: (w) => `/v1/slices/${w.slice}/members`, token: (w) => w.pi, bad: [[{ user_id: 'bob' }, /user_id/], [{}, /user_id/]] },
  { route: 'POST /v1/slices/:name/renew', method: 'POST', url: (w) => `/v1/slices/${w.slice}/renew`, token: (w) => w.pi, bad: [[{ expires_at: 'tomorrow' }, /expires_at/], [{ expires_at: 1 }, /expires_at/]] },
  { route: 'POST /v1/slices/:name/slivers', method: 'POST', url: (w) => `/v1/slices/${w.slice}/slivers`, token: (w) => w.pi, bad: [[{ node_id: 'node1' }, /node_id/], [{ node_id: null }, /node_id/]] },
  { route: 'POST /v1/slivers/:id/actions', method: 'POST', url: (w) => `/v1/slivers/${w.ids.sliver}/actions`, token: (w) => w.pi, bad: [[{ action: 'explode' }, /start, stop, restart/], [{ action: 'stop', now: true }, /now/]] },
  {
    route: 'PUT /v1/nodes/:id/observed-state', method: 'PUT', url: (w) => `/v1/nodes/${w.ids.node}/observed-state`, token: (w) => w.node,
    bad: [[{ slivers: [{ id: 'x', state: 'running' }] }, /id/], [{ slivers: [{ id: '00000000-0000-4000-8000-000000000000', state: 'happy' }] }, /state/], [{}, /slivers/]],
  },
  { route: 'POST /v1/nodes/:id/events', method: 'POST', url: (w) => `/v1/nodes/${w.ids.node}/events`, token: (w) => w.node, bad: [[{ type: 'NotAType' }, /type/], [{ type: 'watchdog.reset', data: 'x' }, /data/]] },
];

describe('bad input', () => {
  for (const wr of writes) {
    it(`${wr.route} refuses bad bodies, malformed JSON and oversized bodies`, async () => {
      const before = await snapshot();
      for (const [body, field] of wr.bad) {
        const r = await call(t.app, wr.method, wr.url(w), wr.token(w), body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(r.body).toMatchObject({ status: 400, code: 'invalid_request' });
        expect(r.body.detail, JSON.stringify(body)).toMatch(field);
      }
      const malformed = await call(t.app, wr.method, wr.url(w), wr.token(w), '{"oops":');
      expect(malformed.status).toBe(400);
      expect(malformed.body.code).toBe('malformed_json');
      const huge = await call(t.app, wr.method, wr.url(w), wr.token(w), JSON.stringify({ pad: 'x'.repeat(8192) }));
      expect(huge.status).toBe(413);
      expect(huge.body.code).toBe('payload_too_large');
      const notJson = await call(t.app, wr.method, wr.url(w), wr.token(w), undefined, { 'content-type': 'text/plain' });
      expect([400, 415]).toContain(notJson.status);
      expect(await snapshot()).toEqual(before);
    });
  }

  it('NUL characters in text from users are a 400 naming the field, not a server fault', async () => {
    const before = await snapshot();
    const r = await call(t.app, 'PATCH', `/v1/slices/${w.slice}`, w.pi, { description: 'a\u0000b' });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe('invalid_request');
    expect(r.body.detail).toMatch(/body\.description/);
    // A node's events keep their data with the NUL dropped (fuzz.test.ts).
    expect(await snapshot()).toEqual(before);
  });

  it('a trailing slash names the same route', async () => {
    expect((await call(t.app, 'GET', '/v1/slices/', w.admin)).status).toBe(200);
  });

  it('unknown routes and methods are problem+json 404s', async () => {
    for (const [m, u] of [['GET', '/v2/slices'], ['POST', '/v1/nothing'], ['GET', '/nothing-here'], ['POST', '/']]) {
      const r = await call(t.app, m as string, u as string, w.admin);
      expect(r.status).toBe(404);
      expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(r.body.code).toBe('not_found');
    }
  });

  it('bad path and query parameters are 400s that name them', async () => {
    const r = await call(t.app, 'GET', '/v1/slivers/not-a-uuid', w.admin);
    expect(r.status).toBe(400);
    expect(r.body.detail).toMatch(/params\.id/);
    const q = await call(t.app, 'GET', '/v1/events?after=abc', w.admin);
    expect(q.status).toBe(400);
    expect(q.body.detail).toMatch(/querystring\.after/);
    const unknown = await call(t.app, 'GET', '/v1/events?colour=red', w.admin);
    expect(unknown.status).toBe(400);
  });

  it('a bad enrollment token or a reused one is refused', async () => {
    const body = { hostname: 'z.test', address: '192.0.2.9', capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 64, disk_mb: 64 } };
    expect((await call(t.app, 'POST', '/v1/nodes/enroll', null, { ...body, token: 'ple_nope' })).status).toBe(401);
    const tok = (await call(t.app, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {})).body.token;
    expect((await call(t.app, 'POST', '/v1/nodes/enroll', null, { ...body, token: tok })).status).toBe(201);
    const again = await call(t.app, 'POST', '/v1/nodes/enroll', null, { ...body, token: tok });
    expect(again.status).toBe(401);
    expect(again.body.detail).toMatch(/already used/);
  });

  it('a wrong password is 401 and login is rate-limited per address and email', async () => {
    const limited = await testApp({ config: { loginRateLimitPerMinute: 3 } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await call(limited.app, 'POST', '/v1/auth/login', null, { email: 'admin@planetlite.test', password: 'wrong' })).status);
      expect(statuses).toEqual([401, 401, 401, 429, 429]);
      const r = await call(limited.app, 'POST', '/v1/auth/login', null, { email: 'admin@planetlite.test', password: 'wrong' });
      expect(r.body.code).toBe('rate_limited');
      // Another email from the same address still gets through.
      expect((await call(limited.app, 'POST', '/v1/auth/login', null, { email: 'someone@x.test', password: 'wrong' })).status).toBe(401);
    } finally {
      await limited.close();
    }
  });
});
