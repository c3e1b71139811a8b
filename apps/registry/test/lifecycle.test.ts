// Node lifecycle for site admins (drain, undrain, decommission) and revoking credentials: node
// keys (and rotating them), user tokens, unused enrollment tokens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, cleanupKeys, makeWorld, ok, login, testApp, type TestApp, type World } from './helpers.js';

const CAPS = { lxc: true, kvm: false, kvm_accel: null };
const RES = { cpus: 2, memory_mb: 4096, disk_mb: 20000 };

describe('node lifecycle and revocation', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await testApp();
  });
  afterAll(async () => {
    await t.close();
    cleanupKeys();
  });

  /** A fresh node at the world's site, by a new enrollment token. */
  async function enrollAt(w: World, host: string): Promise<{ node_id: string; node_key: string }> {
    const tok = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.tech, {});
    return ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, { token: tok.token, hostname: host, address: '192.0.2.20', capabilities: CAPS, resources: RES });
  }

  const eventsOf = async (w: World, node: string) => (await ok(t.app, 200, 'GET', `/v1/events?node=${node}&limit=1000`, w.admin)).events as Array<{ type: string; data: any }>;

  it('drain stops new slivers (409 node_draining naming the node), keeps the running ones, and undrain reverses it', async () => {
    const w = await makeWorld(t.app);
    const id = w.ids.node;
    const drained = await ok(t.app, 200, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'drain' });
    expect(drained).toMatchObject({ id, admin_state: 'draining', key_revoked_at: null });
    // Researchers see it.
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.user)).admin_state).toBe('draining');
    expect((await ok(t.app, 200, 'GET', '/v1/nodes', w.outsider)).nodes.find((n: any) => n.id === id).admin_state).toBe('draining');

    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: `${w.site}_two`, description: 'd', url: 'u' });
    const refused = await call(t.app, 'POST', `/v1/slices/${w.site}_two/slivers`, w.pi, { node_id: id });
    expect(refused.status).toBe(409);
    expect(refused.body.code).toBe('node_draining');
    expect(refused.body.detail).toContain(`node1.${w.site}.test`);

    // The sliver already there stays wanted running.
    const doc = await ok(t.app, 200, 'GET', `/v1/nodes/${id}/desired-state`, w.node);
    expect(doc.slivers.map((s: any) => [s.id, s.desired])).toEqual([[w.ids.sliver, 'running']]);

    // Draining again changes nothing and records nothing more.
    await ok(t.app, 200, 'POST', `/v1/nodes/${id}/actions`, w.pi, { action: 'drain' });
    expect((await ok(t.app, 200, 'POST', `/v1/nodes/${id}/actions`, w.admin, { action: 'undrain' })).admin_state).toBe('active');
    await ok(t.app, 202, 'POST', `/v1/slices/${w.site}_two/slivers`, w.pi, { node_id: id });
    const types = (await eventsOf(w, id)).map((e) => e.type).filter((ty) => /^node\.(enrolled|drained|undrained)$/.test(ty));
    expect(types).toEqual(['node.enrolled', 'node.drained', 'node.undrained']);
  });

  it("only the node's site tech or pi, or an admin, may drain or decommission it", async () => {
    const w = await makeWorld(t.app);
    for (const who of [w.user, w.otherPi, w.outsider]) {
      const r = await call(t.app, 'POST', `/v1/nodes/${w.ids.node}/actions`, who, { action: 'drain' });
      expect(r.status).toBe(403);
      expect(r.body.code).toBe('forbidden');
    }
    expect((await call(t.app, 'POST', `/v1/nodes/${w.ids.node}/actions`, w.node, { action: 'drain' })).status).toBe(403);
    // Bad input is 400 naming the field, before anything is looked up.
    for (const [url, body, field] of [
      [`/v1/nodes/${w.ids.node}/actions`, { action: 'reboot' }, 'action'],
      [`/v1/nodes/${w.ids.node}/actions`, { action: 'drain', now: true }, 'now'],
      [`/v1/nodes/${w.ids.node}/actions`, {}, 'action'],
      ['/v1/nodes/not-a-uuid/actions', { action: 'drain' }, 'id'],
    ] as const) {
      const r = await call(t.app, 'POST', url, w.tech, body);
      expect([r.status, r.body.code]).toEqual([400, 'invalid_request']);
      expect(r.body.detail).toContain(field);
    }
    const badToken = await call(t.app, 'DELETE', `/v1/sites/${w.site}/enrollment-tokens/nope`, w.tech);
    expect([badToken.status, badToken.body.code]).toEqual([400, 'invalid_request']);
    expect((await call(t.app, 'POST', '/v1/nodes/00000000-0000-4000-8000-000000000000/actions', w.admin, { action: 'drain' })).status).toBe(404);
    expect((await call(t.app, 'DELETE', `/v1/nodes/${w.ids.node}/key`, w.user)).status).toBe(403);
  });

  it('decommission tears the slivers down through the desired state, then revokes the key once the node confirms; the record stays', async () => {
    const w = await makeWorld(t.app);
    const id = w.ids.node;
    const going = await ok(t.app, 202, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'decommission' });
    expect(going.admin_state).toBe('decommissioning');
    // The node still talks (its key works until its slivers are gone) and is told to delete them.
    const doc = await ok(t.app, 200, 'GET', `/v1/nodes/${id}/desired-state`, w.node);
    expect(doc.slivers.map((s: any) => s.desired)).toEqual(['deleted']);
    expect((await ok(t.app, 200, 'GET', `/v1/slivers/${w.ids.sliver}`, w.user)).state).toBe('deleting');
    // No new slivers meanwhile; no drain either.
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: `${w.site}_late`, description: 'd', url: 'u' });
    const late = await call(t.app, 'POST', `/v1/slices/${w.site}_late/slivers`, w.pi, { node_id: id });
    expect([late.status, late.body.code]).toEqual([409, 'node_decommissioned']);
    expect((await call(t.app, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'drain' })).body.code).toBe('node_decommissioned');

    // A report still holding the sliver changes nothing; the one without it finishes the job.
    await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [{ id: w.ids.sliver, state: 'deleting' }] });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.admin)).admin_state).toBe('decommissioning');
    expect(await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [] })).toMatchObject({ removed: 1 });

    const gone = await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.admin);
    expect(gone.admin_state).toBe('decommissioned');
    expect(gone.key_revoked_at).toEqual(expect.any(String));
    const refused = await call(t.app, 'GET', `/v1/nodes/${id}/desired-state`, w.node);
    expect([refused.status, refused.body.code]).toEqual([401, 'node_key_revoked']);
    // It leaves the node list unless asked for all.
    expect((await ok(t.app, 200, 'GET', `/v1/nodes?site=${w.site}`, w.user)).nodes.map((n: any) => n.id)).not.toContain(id);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes?site=${w.site}&all=true`, w.user)).nodes.map((n: any) => n.id)).toContain(id);
    const types = (await eventsOf(w, id)).map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(['node.decommissioning', 'node.decommissioned']));
    expect(types.indexOf('node.decommissioned')).toBeGreaterThan(types.indexOf('node.decommissioning'));
    // Decommissioning again is a no-op; undrain is refused.
    expect((await ok(t.app, 202, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'decommission' })).admin_state).toBe('decommissioned');
    expect((await call(t.app, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'undrain' })).status).toBe(409);

    // Enrolled again with a new token, the same machine is back in service with a new key.
    const back = await enrollAt(w, `node1.${w.site}.test`);
    expect(back.node_id).toBe(id);
    const node = await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, back.node_key);
    expect([node.admin_state, node.key_revoked_at]).toEqual(['active', null]);
  });

  it('force decommissions a node that is gone: its slivers are forgotten without its confirmation', async () => {
    const w = await makeWorld(t.app);
    const id = w.ids.node;
    // The node has called in, so it counts as online: force is refused then.
    await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [{ id: w.ids.sliver, state: 'running' }] });
    const online = await call(t.app, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'decommission', force: true });
    expect([online.status, online.body.code]).toEqual([409, 'conflict']);
    expect((await call(t.app, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'drain', force: true })).status).toBe(400);
    // Plain decommission first: it waits for the node, which never answers again.
    expect((await ok(t.app, 202, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'decommission' })).admin_state).toBe('decommissioning');
    await t.db.query("UPDATE nodes SET state = 'offline' WHERE id = $1", [id]);
    const done = await ok(t.app, 202, 'POST', `/v1/nodes/${id}/actions`, w.tech, { action: 'decommission', force: true });
    expect(done.admin_state).toBe('decommissioned');
    expect((await call(t.app, 'GET', `/v1/slivers/${w.ids.sliver}`, w.user)).status).toBe(404);
    // The slice stays (it was not being deleted), with no slivers left.
    expect((await ok(t.app, 200, 'GET', `/v1/slices/${w.slice}/slivers`, w.user)).slivers).toEqual([]);
    const last = (await eventsOf(w, id)).filter((e) => e.type === 'sliver.state').at(-1);
    expect(last?.data).toMatchObject({ state: 'deleted', reason: 'node decommissioned by force' });
  });

  it('a node without slivers is decommissioned at once', async () => {
    const w = await makeWorld(t.app);
    const n = await enrollAt(w, `empty.${w.site}.test`);
    const done = await ok(t.app, 202, 'POST', `/v1/nodes/${n.node_id}/actions`, w.admin, { action: 'decommission' });
    expect(done.admin_state).toBe('decommissioned');
    expect((await call(t.app, 'GET', `/v1/nodes/${n.node_id}`, n.node_key)).body.code).toBe('node_key_revoked');
  });

  it('a revoked node key fails at once, also for a long-poll already waiting', async () => {
    const w = await makeWorld(t.app);
    const id = w.ids.node;
    const first = await call(t.app, 'GET', `/v1/nodes/${id}/desired-state`, w.node);
    const poll = call(t.app, 'GET', `/v1/nodes/${id}/desired-state?wait=30`, w.node, undefined, { 'if-none-match': String(first.headers.etag) });
    await new Promise((r) => setTimeout(r, 300));
    const started = Date.now();
    const revoked = await ok(t.app, 200, 'DELETE', `/v1/nodes/${id}/key`, w.tech);
    expect(revoked.key_revoked_at).toEqual(expect.any(String));
    const woke = await poll;
    expect([woke.status, woke.body.code]).toEqual([401, 'node_key_revoked']);
    expect(Date.now() - started).toBeLessThan(5000);
    const report = await call(t.app, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [] });
    expect([report.status, report.body.code]).toEqual([401, 'node_key_revoked']);
    expect(report.body.detail).toContain('enroll the node again');
    expect((await eventsOf(w, id)).map((e) => e.type)).toContain('node.key_revoked');
  });

  it('rotates a node key without downtime: the old key works until the new one is first used, and a short grace after', async () => {
    const w = await makeWorld(t.app);
    const id = w.ids.node;
    // Only the node itself asks for its new key.
    expect((await call(t.app, 'POST', `/v1/nodes/${id}/key`, w.admin)).status).toBe(403);
    expect((await call(t.app, 'POST', `/v1/nodes/${id}/key`, w.nodeB)).status).toBe(403);
    const abandoned = (await ok(t.app, 201, 'POST', `/v1/nodes/${id}/key`, w.node)).node_key as string;
    const rotated = await ok(t.app, 201, 'POST', `/v1/nodes/${id}/key`, w.node);
    expect(rotated.node_id).toBe(id);
    expect(rotated.node_key).toMatch(/^pln_/);
    // A newer request replaced the first new key.
    expect((await call(t.app, 'GET', `/v1/nodes/${id}`, abandoned)).status).toBe(401);
    // Both work now; the first use of the new one makes it the key.
    await ok(t.app, 200, 'GET', `/v1/nodes/${id}/desired-state`, w.node);
    await ok(t.app, 200, 'GET', `/v1/nodes/${id}/desired-state`, rotated.node_key);
    await ok(t.app, 200, 'GET', `/v1/nodes/${id}/desired-state`, w.node); // within the grace
    expect((await eventsOf(w, id)).map((e) => e.type)).toContain('node.key_rotated');
    // After the grace the old key is unknown.
    await t.db.query("UPDATE nodes SET prev_key_until = now() - interval '1 second' WHERE id = $1", [id]);
    const old = await call(t.app, 'GET', `/v1/nodes/${id}/desired-state`, w.node);
    expect([old.status, old.body.code]).toEqual([401, 'token_invalid']);
    await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, rotated.node_key, { slivers: [] });
  });

  it('logout ends the caller\'s own token; an admin ends all of a user\'s tokens', async () => {
    const w = await makeWorld(t.app);
    const email = `pi${w.site.slice(5)}@${w.site}.test`;
    const second = await login(t.app, email, 'password-123');
    const r = await call(t.app, 'POST', '/v1/auth/logout', w.pi);
    expect(r.status).toBe(204);
    const after = await call(t.app, 'GET', '/v1/users/me', w.pi);
    expect([after.status, after.body.code]).toEqual([401, 'token_invalid']);
    await ok(t.app, 200, 'GET', '/v1/users/me', second); // only that one token ended
    expect((await call(t.app, 'POST', '/v1/auth/logout')).status).toBe(401);

    expect((await call(t.app, 'DELETE', `/v1/users/${w.ids.pi}/tokens`, w.user)).status).toBe(403);
    const third = await login(t.app, email, 'password-123');
    expect(await ok(t.app, 200, 'DELETE', `/v1/users/${w.ids.pi}/tokens`, w.admin)).toEqual({ revoked: 2 });
    for (const tok of [second, third]) expect((await call(t.app, 'GET', '/v1/users/me', tok)).status).toBe(401);
    // A user may end their own.
    expect(await ok(t.app, 200, 'DELETE', `/v1/users/${w.ids.user}/tokens`, w.user)).toEqual({ revoked: 1 });
    expect((await call(t.app, 'DELETE', '/v1/users/00000000-0000-4000-8000-000000000000/tokens', w.admin)).status).toBe(404);
  });

  it("lists a site's unused enrollment tokens (never the secrets) and revokes one before it is used", async () => {
    const w = await makeWorld(t.app);
    const a = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.tech, {});
    const b = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.pi, { ttl_seconds: 600 });
    expect(a.id).toMatch(/^[0-9a-f-]{36}$/);
    const listed = (await ok(t.app, 200, 'GET', `/v1/sites/${w.site}/enrollment-tokens`, w.tech)).tokens;
    // The world's tokens were used by its nodes: only the two new ones are listed.
    expect(listed.map((x: any) => x.id)).toEqual([a.id, b.id]);
    expect(JSON.stringify(listed)).not.toContain(a.token);
    expect(listed[0]).toMatchObject({ site: w.site, created_by: w.ids.tech });

    for (const who of [w.user, w.otherPi]) expect((await call(t.app, 'GET', `/v1/sites/${w.site}/enrollment-tokens`, who)).status).toBe(403);
    expect((await call(t.app, 'DELETE', `/v1/sites/${w.site}/enrollment-tokens/${a.id}`, w.otherPi)).status).toBe(403);
    expect((await call(t.app, 'DELETE', `/v1/sites/${w.otherSite}/enrollment-tokens/${a.id}`, w.admin)).status).toBe(404);
    expect((await call(t.app, 'DELETE', `/v1/sites/${w.site}/enrollment-tokens/${a.id}`, w.tech)).status).toBe(204);
    expect((await call(t.app, 'DELETE', `/v1/sites/${w.site}/enrollment-tokens/${a.id}`, w.tech)).status).toBe(404);
    const refused = await call(t.app, 'POST', '/v1/nodes/enroll', null, { token: a.token, hostname: `x.${w.site}.test`, address: '192.0.2.21', capabilities: CAPS, resources: RES });
    expect([refused.status, refused.body.code]).toEqual([401, 'token_invalid']);
    // A used token can no longer be revoked (it is history).
    await ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, { token: b.token, hostname: `y.${w.site}.test`, address: '192.0.2.22', capabilities: CAPS, resources: RES });
    expect((await ok(t.app, 200, 'GET', `/v1/sites/${w.site}/enrollment-tokens`, w.admin)).tokens).toEqual([]);
    expect((await call(t.app, 'DELETE', `/v1/sites/${w.site}/enrollment-tokens/${b.id}`, w.admin)).status).toBe(404);
  });
});
