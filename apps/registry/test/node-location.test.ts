// A node's location, set by its site (tech or pi) or an admin through PATCH /v1/nodes/{id}: shown on
// the node in lists and alone, cleared with null, refused out of bounds with a 400 naming the field,
// recorded as an event, and published in /openapi.json.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, cleanupKeys, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

const PRINCETON = { city: 'Princeton, NJ', latitude: 40.3573, longitude: -74.6672 };

describe('node location', () => {
  let t: TestApp;
  let w: World;
  beforeAll(async () => {
    t = await testApp();
    w = await makeWorld(t.app);
  });
  afterAll(async () => {
    await t.close();
    cleanupKeys();
  });

  const patch = (token: string | null, body: unknown, id = w.ids.node) => call(t.app, 'PATCH', `/v1/nodes/${id}`, token, body);

  it('is null until the site sets it; then every user sees it on the node and in the list', async () => {
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user)).location).toBeNull();
    const set = await patch(w.tech, { location: PRINCETON });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(set.body).toMatchObject({ id: w.ids.node, location: PRINCETON });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.outsider)).location).toEqual(PRINCETON);
    const listed = (await ok(t.app, 200, 'GET', '/v1/nodes', w.user)).nodes as Array<{ id: string; location: unknown }>;
    expect(listed.find((n) => n.id === w.ids.node)?.location).toEqual(PRINCETON);
    expect(listed.find((n) => n.id === w.ids.nodeB)?.location).toBeNull();
  });

  it('the pi changes it, an admin too, and location: null clears it; each change is an event', async () => {
    const moved = { city: 'Zürich', latitude: 47.3769, longitude: 8.5417 };
    expect((await ok(t.app, 200, 'PATCH', `/v1/nodes/${w.ids.node}`, w.pi, { location: moved })).location).toEqual(moved);
    const edge = { city: 'South Pole', latitude: -90, longitude: 180 };
    expect((await ok(t.app, 200, 'PATCH', `/v1/nodes/${w.ids.nodeB}`, w.admin, { location: edge })).location).toEqual(edge);
    expect((await ok(t.app, 200, 'PATCH', `/v1/nodes/${w.ids.node}`, w.pi, { location: null })).location).toBeNull();
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user)).location).toBeNull();
    const events = (await ok(t.app, 200, 'GET', `/v1/events?node=${w.ids.node}&type=node.located`, w.admin)).events as Array<{ data: { location: unknown; by: string } }>;
    expect(events.map((e) => e.data.location)).toEqual([PRINCETON, moved, null]);
  });

  it('bad values are a 400 problem naming the field, and change nothing', async () => {
    await ok(t.app, 200, 'PATCH', `/v1/nodes/${w.ids.node}`, w.tech, { location: PRINCETON });
    const bad: Array<[unknown, RegExp]> = [
      [{ location: { ...PRINCETON, latitude: 90.5 } }, /latitude/],
      [{ location: { ...PRINCETON, latitude: -91 } }, /latitude/],
      [{ location: { ...PRINCETON, longitude: 180.01 } }, /longitude/],
      [{ location: { ...PRINCETON, longitude: -181 } }, /longitude/],
      [{ location: { ...PRINCETON, latitude: '40' } }, /latitude/],
      [{ location: { ...PRINCETON, city: '' } }, /city/],
      [{ location: { ...PRINCETON, city: 'x'.repeat(101) } }, /city/],
      [{ location: { ...PRINCETON, city: 'tab\there' } }, /city/],
      [{ location: { ...PRINCETON, city: ' Princeton' } }, /city/],
      [{ location: { city: 'Princeton', latitude: 1 } }, /longitude/],
      [{ location: { ...PRINCETON, elevation: 3 } }, /elevation|additional/],
      [{}, /body/],
      [{ hostname: 'renamed' }, /hostname|additional/],
    ];
    for (const [body, field] of bad) {
      const r = await patch(w.tech, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(r.body.detail, JSON.stringify(body)).toMatch(field);
    }
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user)).location).toEqual(PRINCETON);
  });

  it("a user, another site's pi and a node key may not set it; an unknown node is 404", async () => {
    for (const token of [w.user, w.otherPi, w.outsider]) expect((await patch(token, { location: null })).status).toBe(403);
    expect((await patch(w.node, { location: null })).status).toBe(403);
    expect((await patch(null, { location: null })).status).toBe(401);
    const unknown = await patch(w.admin, { location: null }, '00000000-0000-4000-8000-000000000000');
    expect(unknown.status).toBe(404);
    expect(unknown.body.code).toBe('not_found');
    const refused = await patch(w.otherPi, { location: null });
    expect(refused.body).toMatchObject({ code: 'forbidden' });
    expect(refused.body.detail).toContain(`site ${w.site}`);
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user)).location).toEqual(PRINCETON);
  });

  it('/openapi.json has the operation, the bounds and location on the node', async () => {
    const spec = await ok(t.app, 200, 'GET', '/openapi.json');
    const op = spec.paths['/v1/nodes/{id}'].patch;
    expect(op).toBeDefined();
    const json = JSON.stringify(spec);
    expect(json).toContain('"minimum":-90');
    expect(json).toContain('"maximum":180');
    const node = op.responses['200'].content['application/json'].schema;
    const props = node.properties ?? spec.components?.schemas?.[node.$ref?.split('/').pop()]?.properties;
    expect(JSON.stringify(props?.location ?? node)).toContain('latitude');
  });
});
