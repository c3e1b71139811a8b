// Slice and sliver policy: naming, expiry and renewal, quotas, ports, lifecycle with a node.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';
import { sweepExpiredSlices } from '../src/index.js';

const DAY = 86400_000;
let t: TestApp;
let w: World;

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app, { maxSlices: 3, maxSlivers: 3 });
});
afterAll(() => t.close());

describe('slices', () => {
  it('are named <login_base>_<suffix> and expire in two weeks by default', async () => {
    const s = await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: `${w.site}_web`, description: 'web', url: 'https://example.org' });
    expect(s.site).toBe(w.site);
    expect(s.kind).toBe('lxc');
    expect(s.image).toBe('debian12');
    const days = (Date.parse(s.expires_at) - Date.now()) / DAY;
    expect(days).toBeGreaterThan(13.9);
    expect(days).toBeLessThan(14.1);
    expect(s.members.map((m: { id: string }) => m.id)).toContain(w.ids.pi);
    for (const name of [`${w.site}-web`, `${w.site}_`, `${w.site}_Web`, `_web`, `${w.site}_${'x'.repeat(31)}`]) {
      const r = await call(t.app, 'POST', '/v1/slices', w.pi, { name, description: 'd', url: 'u' });
      expect(r.status, name).toBe(400);
      expect(r.body.detail).toMatch(/body\.name/);
    }
    // A pi of one site cannot take a name in another site's namespace.
    expect((await call(t.app, 'POST', '/v1/slices', w.pi, { name: `${w.otherSite}_web`, description: 'd', url: 'u' })).status).toBe(403);
    expect((await call(t.app, 'POST', '/v1/slices', w.pi, { name: `${w.site}_web`, description: 'd', url: 'u' })).body.code).toBe('already_exists');
  });

  it('enforce the site max_slices', async () => {
    // makeWorld made one, the test above one: the third fits, the fourth does not.
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: `${w.site}_third`, description: 'd', url: 'u' });
    const r = await call(t.app, 'POST', '/v1/slices', w.pi, { name: `${w.site}_fourth`, description: 'd', url: 'u' });
    expect(r.status).toBe(409);
    expect(r.body.code).toBe('slice_quota_exceeded');
    expect((await call(t.app, 'GET', `/v1/slices/${w.site}_fourth`, w.admin)).status).toBe(404);
  });

  it('hold max_slices exactly under concurrent creations, and count a deleted slice out at once', async () => {
    const site = `q${w.site.slice(-6)}`;
    await ok(t.app, 201, 'POST', '/v1/sites', w.admin, { login_base: site, name: 'Quota', max_slices: 5, max_slivers: 5 });
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => call(t.app, 'POST', '/v1/slices', w.admin, { name: `${site}_c${i}`, description: 'd', url: 'u' })));
    expect(answers.filter((r) => r.status === 201)).toHaveLength(5);
    expect(new Set(answers.filter((r) => r.status !== 201).map((r) => `${r.status} ${r.body.code}`))).toEqual(new Set(['409 slice_quota_exceeded']));
    expect(answers.find((r) => r.status === 409)!.body.detail).toBe(`site ${site} may have at most 5 slices`);
    const made = answers.filter((r) => r.status === 201).map((r) => r.body.name as string);
    // The refused ones left nothing behind: no slice, no membership, no event.
    const { rows } = await t.db.query<{ slices: number; members: number; events: number; counted: number }>(
      `SELECT (SELECT count(*)::int FROM slices WHERE site = $1) AS slices,
              (SELECT count(*)::int FROM slice_members WHERE slice LIKE $1 || '\\_%') AS members,
              (SELECT count(*)::int FROM events WHERE type = 'slice.created' AND slice LIKE $1 || '\\_%') AS events,
              (SELECT active_slices FROM sites WHERE login_base = $1) AS counted`,
      [site],
    );
    expect(rows[0]).toEqual({ slices: 5, members: 5, events: 5, counted: 5 });
    // A deleted slice (no slivers: gone at once) makes room for one more, and only one.
    await ok(t.app, 202, 'DELETE', `/v1/slices/${made[0]}`, w.admin);
    await ok(t.app, 201, 'POST', '/v1/slices', w.admin, { name: `${site}_again`, description: 'd', url: 'u' });
    expect((await call(t.app, 'POST', '/v1/slices', w.admin, { name: `${site}_over`, description: 'd', url: 'u' })).body.code).toBe('slice_quota_exceeded');
    expect((await t.db.query<{ n: number }>('SELECT active_slices AS n FROM sites WHERE login_base = $1', [site])).rows[0]!.n).toBe(5);
  });

  it('renew at most 8 weeks ahead unless admin, and only with a description and url', async () => {
    const in7w = new Date(Date.now() + 49 * DAY).toISOString();
    const in9w = new Date(Date.now() + 63 * DAY).toISOString();
    const r = await ok(t.app, 200, 'POST', `/v1/slices/${w.slice}/renew`, w.user, { expires_at: in7w });
    expect(Date.parse(r.expires_at)).toBe(Date.parse(in7w));
    const tooFar = await call(t.app, 'POST', `/v1/slices/${w.slice}/renew`, w.pi, { expires_at: in9w });
    expect(tooFar.status).toBe(400);
    expect(tooFar.body.code).toBe('renewal_refused');
    await ok(t.app, 200, 'POST', `/v1/slices/${w.slice}/renew`, w.admin, { expires_at: in9w });
    const past = await call(t.app, 'POST', `/v1/slices/${w.slice}/renew`, w.pi, { expires_at: new Date(Date.now() - DAY).toISOString() });
    expect(past.status).toBe(400);

    await ok(t.app, 200, 'PATCH', `/v1/slices/${w.site}_web`, w.pi, { url: '' });
    const noUrl = await call(t.app, 'POST', `/v1/slices/${w.site}_web/renew`, w.pi, { expires_at: in7w });
    expect(noUrl.status).toBe(400);
    expect(noUrl.body.detail).toMatch(/description and a url/);
    const events = await ok(t.app, 200, 'GET', `/v1/events?slice=${w.slice}&type=slice.renewed`, w.pi);
    expect(events.events).toHaveLength(2);
  });
});

describe('slivers', () => {
  it('get 10 ports from the node window, lowest for ssh, one per slice per node', async () => {
    const [s] = (await ok(t.app, 200, 'GET', `/v1/slices/${w.slice}/slivers`, w.user)).slivers;
    expect(s.state).toBe('pending');
    expect(s.ports.last - s.ports.first + 1).toBe(10);
    expect(s.ssh).toEqual({ host: '192.0.2.10', port: s.ports.first, user: w.slice });
    expect(s.ports.first).toBeGreaterThanOrEqual(20000);
    const dup = await call(t.app, 'POST', `/v1/slices/${w.slice}/slivers`, w.pi, { node_id: w.ids.node });
    expect(dup.status).toBe(409);
    const second = await ok(t.app, 202, 'POST', `/v1/slices/${w.site}_web/slivers`, w.pi, { node_id: w.ids.node });
    expect(second.ports.first).toBe(s.ports.last + 1);
  });

  it('enforce the site max_slivers and node capabilities', async () => {
    await ok(t.app, 202, 'POST', `/v1/slices/${w.site}_third/slivers`, w.pi, { node_id: w.ids.node });
    const r = await call(t.app, 'POST', `/v1/slices/${w.site}_third/slivers`, w.pi, { node_id: w.ids.nodeB });
    expect(r.body.code).toBe('sliver_quota_exceeded');
    await ok(t.app, 200, 'PATCH', `/v1/sites/${w.site}`, w.admin, { max_slices: 10, max_slivers: 10 });
    const kvm = await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: `${w.site}_vm`, description: 'd', url: 'u', kind: 'kvm' });
    expect(kvm.kind).toBe('kvm');
    const r2 = await call(t.app, 'POST', `/v1/slices/${w.site}_vm/slivers`, w.pi, { node_id: w.ids.node });
    expect(r2.status).toBe(409);
    expect(r2.body.code).toBe('node_incapable');
    const r3 = await call(t.app, 'POST', `/v1/slices/${w.site}_vm/slivers`, w.pi, { node_id: '00000000-0000-4000-8000-000000000000' });
    expect(r3.status).toBe(404);
  });

  it('actions change the desired state the node sees; delete completes when the node confirms', async () => {
    const id = w.ids.sliver;
    const doc = async () => (await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node)).slivers.find((s: { id: string }) => s.id === id);
    expect((await doc()).desired).toBe('running');
    await ok(t.app, 202, 'POST', `/v1/slivers/${id}/actions`, w.user, { action: 'stop' });
    expect((await doc()).desired).toBe('stopped');
    await ok(t.app, 202, 'POST', `/v1/slivers/${id}/actions`, w.user, { action: 'restart' });
    const d = await doc();
    expect(d).toMatchObject({ desired: 'running', restart_seq: 1, reset_seq: 0 });
    await ok(t.app, 202, 'POST', `/v1/slivers/${id}/actions`, w.user, { action: 'reset' });
    expect((await doc()).reset_seq).toBe(1);

    // A sliver the memory watchdog froze: the node reports the hold and the API shows it; a thaw
    // action, though desired is already 'running', reaches the node as a new thaw_seq.
    const hold = { frozen_at: new Date().toISOString(), reason: 'node memory pressure 40% ≥ 30%', node_psi_some_avg10: 40, sliver_psi_some_avg10: 35, thaw_psi_some: 10, freeze_timeout_seconds: 60 };
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [{ id, state: 'stopped', watchdog_hold: hold }] });
    expect(await ok(t.app, 200, 'GET', `/v1/slivers/${id}`, w.user)).toMatchObject({ state: 'stopped', desired: 'running', watchdog_hold: hold });
    const thawSeq = (await doc()).thaw_seq as number;
    await ok(t.app, 202, 'POST', `/v1/slivers/${id}/actions`, w.user, { action: 'thaw' });
    expect(await doc()).toMatchObject({ desired: 'running', thaw_seq: thawSeq + 1 });

    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, {
      slivers: [{ id, state: 'running', address: '10.200.0.2', memory_bytes: 4 << 20, cpu_seconds: 1.5 }],
    });
    const running = await ok(t.app, 200, 'GET', `/v1/slivers/${id}`, w.user);
    expect(running).toMatchObject({ state: 'running', address: '10.200.0.2', usage: { memory_bytes: 4 << 20, cpu_seconds: 1.5 }, watchdog_hold: null });
    const node = await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user);
    expect(node.state).toBe('online');

    const del = await ok(t.app, 202, 'DELETE', `/v1/slivers/${id}`, w.user);
    expect(del.state).toBe('deleting');
    expect((await doc()).desired).toBe('deleted');
    expect((await call(t.app, 'POST', `/v1/slivers/${id}/actions`, w.user, { action: 'start' })).body.code).toBe('sliver_deleting');
    // The node still reports it running: it stays deleting until the node says it is gone.
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [{ id, state: 'running' }] });
    expect((await ok(t.app, 200, 'GET', `/v1/slivers/${id}`, w.user)).state).toBe('deleting');
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [] });
    expect((await call(t.app, 'GET', `/v1/slivers/${id}`, w.user)).status).toBe(404);
    const states = await ok(t.app, 200, 'GET', `/v1/events?type=sliver.state&slice=${w.slice}`, w.user);
    expect(states.events.map((e: { data: { state: string } }) => e.data.state)).toEqual(['pending', 'stopped', 'running', 'deleting', 'deleted']);
  });

  it('deleting a slice tears its slivers down and frees the name once they are gone', async () => {
    const name = `${w.site}_web`;
    const before = (await ok(t.app, 200, 'GET', `/v1/slices/${name}/slivers`, w.pi)).slivers;
    expect(before).toHaveLength(1);
    const r = await ok(t.app, 202, 'DELETE', `/v1/slices/${name}`, w.pi);
    expect(r.state).toBe('deleting');
    expect((await ok(t.app, 200, 'GET', `/v1/slivers/${before[0].id}`, w.pi)).state).toBe('deleting');
    expect((await call(t.app, 'POST', '/v1/slices', w.pi, { name, description: 'd', url: 'u' })).body.code).toBe('slice_deleting');
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [{ id: before[0].id, state: 'deleted' }] });
    expect((await call(t.app, 'GET', `/v1/slices/${name}`, w.pi)).status).toBe(404);
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'again', url: 'u' });
  });

  it('the expiry sweep sends an expired slice to deleting and records slice.expired', async () => {
    const name = `${w.site}_old`;
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'd', url: 'u' });
    const sliver = await ok(t.app, 202, 'POST', `/v1/slices/${name}/slivers`, w.pi, { node_id: w.ids.node });
    await t.db.query("UPDATE slices SET expires_at = now() - interval '1 minute' WHERE name = $1", [name]);
    const expired = await sweepExpiredSlices(t.app.ctx);
    expect(expired).toEqual([name]);
    expect(await sweepExpiredSlices(t.app.ctx)).toEqual([]);
    expect((await ok(t.app, 200, 'GET', `/v1/slivers/${sliver.id}`, w.pi)).state).toBe('deleting');
    const ev = await ok(t.app, 200, 'GET', `/v1/events?slice=${name}&type=slice.expired`, w.pi);
    expect(ev.events).toHaveLength(1);
  });

  it("keep the site's sliver count on its row: creations at once fill the quota exactly, a confirmed deletion makes room", async () => {
    const counts = async () => (await t.db.query<{ kept: number; counted: number }>(
      'SELECT sliver_count AS kept, (SELECT count(*)::int FROM slivers WHERE site = $1) AS counted FROM sites WHERE login_base = $1', [w.site])).rows[0]!;
    const before = await counts();
    expect(before.kept).toBe(before.counted);
    const quota = await ok(t.app, 200, 'GET', `/v1/sites/${w.site}`, w.admin);
    // Room for exactly 2 more; 5 slices ask at once.
    await ok(t.app, 200, 'PATCH', `/v1/sites/${w.site}`, w.admin, { max_slices: 20, max_slivers: before.counted + 2 });
    const names = Array.from({ length: 5 }, (_, i) => `${w.site}_q${i}`);
    for (const name of names) await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name, description: 'd', url: 'u' });
    const answers = await Promise.all(names.map((name) => call(t.app, 'POST', `/v1/slices/${name}/slivers`, w.pi, { node_id: w.ids.nodeB })));
    expect(answers.map((r) => r.status).sort()).toEqual([202, 202, 409, 409, 409]);
    expect(answers.filter((r) => r.status === 409).every((r) => r.body.code === 'sliver_quota_exceeded')).toBe(true);
    expect(await counts()).toEqual({ kept: before.counted + 2, counted: before.counted + 2 });
    // Deleted and confirmed by its node (a whole report without it): the row goes, and so does its count.
    const made = answers.find((r) => r.status === 202)!.body;
    await ok(t.app, 202, 'DELETE', `/v1/slivers/${made.id}`, w.pi);
    const confirm = async () => {
      const doc = await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.nodeB}/desired-state`, w.nodeB);
      const stay = doc.slivers.filter((s: { desired: string }) => s.desired !== 'deleted').map((s: { id: string }) => ({ id: s.id, state: 'running' }));
      await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.nodeB}/observed-state`, w.nodeB, { slivers: stay });
    };
    await confirm();
    expect(await counts()).toEqual({ kept: before.counted + 1, counted: before.counted + 1 });
    const third = names.find((n) => !answers.some((r) => r.status === 202 && r.body.slice === n))!;
    await ok(t.app, 202, 'POST', `/v1/slices/${third}/slivers`, w.pi, { node_id: w.ids.nodeB });
    // The site as it was, for the tests after this one.
    for (const name of names) await ok(t.app, 202, 'DELETE', `/v1/slices/${name}`, w.pi);
    await confirm();
    expect(await counts()).toEqual({ kept: before.counted, counted: before.counted });
    await ok(t.app, 200, 'PATCH', `/v1/sites/${w.site}`, w.admin, { max_slices: quota.max_slices, max_slivers: quota.max_slivers });
  });
});

describe('slice resources', () => {
  it('change through PATCH by a pi or admin, not a member; bad values are refused; the node hears of it', async () => {
    const before = await ok(t.app, 200, 'GET', `/v1/slices/${w.slice}`, w.pi);
    const existing = (await ok(t.app, 200, 'GET', `/v1/slices/${w.slice}/slivers`, w.pi)).slivers;
    if (!existing.some((s: { node_id: string }) => s.node_id === w.ids.node)) await ok(t.app, 202, 'POST', `/v1/slices/${w.slice}/slivers`, w.pi, { node_id: w.ids.node });
    const member = await call(t.app, 'PATCH', `/v1/slices/${w.slice}`, w.user, { resources: { memory_mb: 512 } });
    expect(member.status).toBe(403);
    expect(member.body.detail).toMatch(/resources/);
    for (const bad of [{ memory_mb: 1 }, { disk_mb: 'x' }, {}, { swap_mb: 10 }]) {
      expect((await call(t.app, 'PATCH', `/v1/slices/${w.slice}`, w.pi, { resources: bad })).status, JSON.stringify(bad)).toBe(400);
    }
    expect((await ok(t.app, 200, 'GET', `/v1/slices/${w.slice}`, w.pi)).resources).toEqual(before.resources);

    const after = await ok(t.app, 200, 'PATCH', `/v1/slices/${w.slice}`, w.pi, { resources: { memory_mb: 512 } });
    expect(after.resources).toEqual({ ...before.resources, memory_mb: 512 });
    const doc = await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    const slivers = doc.slivers.filter((s: { slice: string }) => s.slice === w.slice);
    expect(slivers.length).toBeGreaterThan(0);
    for (const s of slivers) expect(s.resources.memory_mb).toBe(512);
    const events = await ok(t.app, 200, 'GET', `/v1/events?type=slice.resources_changed&slice=${w.slice}`, w.pi);
    expect(events.events).toHaveLength(1);
  });
});

describe('a slice refused', () => {
  // The checks of a creation are one statement (repositories/slices.ts, createSlice); what it
  // refuses comes in the order the API has always given, and leaves nothing behind.
  it('names the site first, then its pi, its being enabled, the image, and the name; and writes nothing', async () => {
    const v = await makeWorld(t.app);
    const r = await t.app.inject({
      method: 'POST',
      url: '/v1/images?name=ctonly&kinds=lxc&arch=x86_64',
      headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${v.admin}` },
      payload: Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(4096)]),
    });
    expect([201, 409]).toContain(r.statusCode);
    const create = (token: string, name: string, extra: Record<string, unknown> = {}) =>
      call(t.app, 'POST', '/v1/slices', token, { name, description: 'd', url: 'u', ...extra });
    const refused = async (p: Promise<{ status: number; body: any }>, status: number, code: string, detail: string) => {
      const a = await p;
      expect([a.status, a.body.code, a.body.detail]).toEqual([status, code, detail]);
    };
    const written = async () => (await t.db.query<{ n: number }>(
      `SELECT (SELECT count(*)::int FROM slices WHERE site IN ($1, $2, 'nosuch')) + (SELECT count(*)::int FROM events WHERE type = 'slice.created' AND slice LIKE ANY (ARRAY[$1 || '\\_%', $2 || '\\_%', 'nosuch\\_%'])) AS n`,
      [v.site, v.otherSite],
    )).rows[0]!.n;
    const before = await written();

    await refused(create(v.pi, 'nosuch_web'), 403, 'forbidden', 'only a pi of site nosuch may create slices named nosuch_…');
    await refused(create(v.admin, 'nosuch_web'), 404, 'not_found', "site nosuch not found (a slice name starts with its site's login_base)");
    await refused(create(v.pi, `${v.otherSite}_web`), 403, 'forbidden', `only a pi of site ${v.otherSite}, or an admin, may create its slices`);
    await refused(create(v.user, `${v.site}_web`), 403, 'forbidden', `only a pi of site ${v.site}, or an admin, may create its slices`);
    // A slice name taken, a disabled site and an image of the wrong kind at once: the site first.
    await ok(t.app, 200, 'PATCH', `/v1/sites/${v.site}`, v.admin, { enabled: false });
    await refused(create(v.pi, v.slice, { kind: 'kvm', image: 'ctonly' }), 403, 'forbidden', `site ${v.site} is disabled`);
    await ok(t.app, 200, 'PATCH', `/v1/sites/${v.site}`, v.admin, { enabled: true });
    await refused(create(v.pi, v.slice, { kind: 'kvm', image: 'ctonly' }), 409, 'image_incompatible',
      'image ctonly serves lxc slivers, not kvm; choose an image whose kinds include kvm (planetlite image ls)');
    await refused(create(v.pi, v.slice), 409, 'already_exists', `slice ${v.slice} already exists`);
    expect(await written()).toBe(before);

    // The same call, once nothing stands in its way, makes the slice; an image the registry has not
    // published is nothing to check.
    const made = await ok(t.app, 201, 'POST', '/v1/slices', v.pi, { name: `${v.site}_late`, description: 'd', url: 'u', kind: 'kvm', image: 'unpublished' });
    expect([made.kind, made.image, made.members.map((m: { id: string }) => m.id)]).toEqual(['kvm', 'unpublished', [v.ids.pi]]);
    expect(await written()).toBe(before + 2);
  });
});
