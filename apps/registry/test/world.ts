// The registry's test world without vitest: a call helper over app.inject, and two sites with users
// in every role, a node at each and a slice with one sliver. The test helpers and the chaos
// scripts (scripts/chaos/) both build on it.
import type { FastifyInstance } from 'fastify';

export const ADMIN = { email: 'admin@planetlite.test', password: 'admin-password' };

export interface Reply {
  status: number;
  body: any;
  headers: Record<string, unknown>;
}

/** One API call through app.inject. */
export async function call(app: FastifyInstance, method: string, url: string, token?: string | null, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const res = await app.inject({
    method: method as 'GET',
    url,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { payload: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  let parsed: unknown = res.body;
  try {
    parsed = res.body ? JSON.parse(res.body) : null;
  } catch {
    // keep text bodies (metrics, docs) as text
  }
  return { status: res.statusCode, body: parsed, headers: res.headers };
}

/** Calls and insists on a status, showing the answer when it differs. */
export async function ok(app: FastifyInstance, status: number, method: string, url: string, token?: string | null, body?: unknown): Promise<any> {
  const r = await call(app, method, url, token, body);
  if (r.status !== status) throw new Error(`${method} ${url} → ${r.status}, wanted ${status}: ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function login(app: FastifyInstance, email: string, password: string): Promise<string> {
  return (await ok(app, 200, 'POST', '/v1/auth/login', null, { email, password })).token as string;
}

export interface World {
  admin: string;
  pi: string; // pi of site a
  tech: string; // tech of site a
  user: string; // plain user of site a, member of the slice
  outsider: string; // user of site b
  otherPi: string; // pi of site b
  node: string; // node key of the node at site a
  nodeB: string; // node key of the node at site b
  ids: { pi: string; tech: string; user: string; outsider: string; otherPi: string; node: string; nodeB: string; sliver: string };
  site: string;
  otherSite: string;
  slice: string;
}

let seq = 0;
/** Two sites with users in every role, a node at each, and a slice with one sliver. */
export async function makeWorld(app: FastifyInstance, opts: { maxSlices?: number; maxSlivers?: number } = {}): Promise<World> {
  const n = ++seq;
  const site = `sitea${n}`;
  const otherSite = `siteb${n}`;
  const admin = await login(app, ADMIN.email, ADMIN.password);
  for (const s of [site, otherSite]) {
    await ok(app, 201, 'POST', '/v1/sites', admin, { login_base: s, name: `Site ${s}`, max_slices: opts.maxSlices ?? 50, max_slivers: opts.maxSlivers ?? 500 });
  }
  const mk = async (who: string, s: string, roles: string[]) => {
    const email = `${who}${n}@${s}.test`;
    const u = await ok(app, 201, 'POST', '/v1/users', admin, { email, name: who, password: 'password-123', site: s, roles });
    return { id: u.id as string, token: await login(app, email, 'password-123') };
  };
  const pi = await mk('pi', site, ['pi', 'user']);
  const tech = await mk('tech', site, ['tech']);
  const user = await mk('user', site, ['user']);
  const outsider = await mk('outsider', otherSite, ['user']);
  const otherPi = await mk('pi', otherSite, ['pi']);
  const enroll = async (s: string, host: string) => {
    const t = await ok(app, 201, 'POST', `/v1/sites/${s}/enrollment-tokens`, admin, {});
    return ok(app, 201, 'POST', '/v1/nodes/enroll', null, {
      token: t.token,
      hostname: host,
      address: '192.0.2.10',
      capabilities: { lxc: true, kvm: false, kvm_accel: null },
      resources: { cpus: 2, memory_mb: 4096, disk_mb: 20000 },
    });
  };
  const node = await enroll(site, `node1.${site}.test`);
  const nodeB = await enroll(otherSite, `node1.${otherSite}.test`);
  const slice = `${site}_exp`;
  await ok(app, 201, 'POST', '/v1/slices', pi.token, { name: slice, description: 'an experiment', url: 'https://example.org/exp' });
  await ok(app, 200, 'POST', `/v1/slices/${slice}/members`, pi.token, { user_id: user.id });
  const sliver = await ok(app, 202, 'POST', `/v1/slices/${slice}/slivers`, pi.token, { node_id: node.node_id });
  return {
    admin,
    pi: pi.token,
    tech: tech.token,
    user: user.token,
    outsider: outsider.token,
    otherPi: otherPi.token,
    node: node.node_key,
    nodeB: nodeB.node_key,
    ids: { pi: pi.id, tech: tech.id, user: user.id, outsider: outsider.id, otherPi: otherPi.id, node: node.node_id, nodeB: nodeB.node_id, sliver: sliver.id },
    site,
    otherSite,
    slice,
  };
}
