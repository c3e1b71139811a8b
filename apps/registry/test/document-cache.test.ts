// A replica answers a node's unchanged desired-state document from memory (DocumentCache), and
// every write that changes a document makes the next poll build it anew: each kind of write is
// tried below through the API. A write that touches no node is seen once the cache's bound
// (PLANETLITE_DOC_CACHE_SECONDS) passes, and at once while the fan-out cannot be heard.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryFanout, type Fanout } from '@planetlite/fanout';
import { laneOf, type Database, type Queryable } from '@planetlite/db';
import { DocumentCache } from '../src/services/desired-state.js';
import { call, cleanupKeys, countingDatabase, freshDatabase, makeWorld, ok, sshPublicKey, testApp, type TestApp, type World } from './helpers.js';

/** A poll without waiting, with the ETag the node holds: 304, or 200 with the document. */
async function poll(t: TestApp, node: string, key: string, etag: string | null): Promise<{ status: number; etag: string; doc: any }> {
  const r = await call(t.app, 'GET', `/v1/nodes/${node}/desired-state`, key, undefined, etag ? { 'if-none-match': etag } : {});
  if (r.status !== 200 && r.status !== 304) throw new Error(`poll: ${r.status} ${JSON.stringify(r.body)}`);
  return { status: r.status, etag: r.headers.etag as string, doc: r.body };
}

describe('the desired-state document cache', () => {
  let db: Database & { statements: number };
  let t: TestApp;
  let w: World;
  let imagesDir: string;

  beforeAll(async () => {
    db = countingDatabase(await freshDatabase());
    imagesDir = mkdtempSync(join(tmpdir(), 'pl-doc-cache-'));
    t = await testApp({ db, config: { imagesDir } });
    w = await makeWorld(t.app);
  });
  afterAll(async () => {
    await t.close();
    await db.close();
    rmSync(imagesDir, { recursive: true, force: true });
    cleanupKeys();
  });

  it('answers an unchanged document without a statement for it, and every change anew', async () => {
    const node = w.ids.node;
    let etag = (await poll(t, node, w.node, null)).etag;
    const before = db.statements;
    expect((await poll(t, node, w.node, etag)).status).toBe(304);
    // last_seen's check only: the document came from memory.
    expect(db.statements - before).toBe(1);

    const slice = `${w.site}_cache`;
    const image = `cache-img-${randomBytes(3).toString('hex')}`;
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: slice, description: 'cache', url: 'https://example.org', image });
    const keyOwner = w.ids.user;
    let keyId = '';
    let sliver = '';
    const sliverIn = (d: any, id: string) => d.slivers.find((s: any) => s.id === id);
    const hasKey = (d: any, id: string) => sliverIn(d, id).keys.some((k: string) => k.endsWith('cache@planetlite'));
    const changes: Array<[string, () => Promise<unknown>, (doc: any) => boolean]> = [
      ['a sliver made', async () => (sliver = (await ok(t.app, 202, 'POST', `/v1/slices/${slice}/slivers`, w.pi, { node_id: node })).id), (d) => !!sliverIn(d, sliver)],
      // The key's owner is a member of the world's slice, with a sliver on this node.
      ['a key added', async () => (keyId = (await ok(t.app, 201, 'POST', `/v1/users/${keyOwner}/keys`, w.user, { key: sshPublicKey('cache@planetlite') })).id), (d) => hasKey(d, w.ids.sliver) && !hasKey(d, sliver)],
      ['a member added', () => ok(t.app, 200, 'POST', `/v1/slices/${slice}/members`, w.pi, { user_id: keyOwner }), (d) => hasKey(d, sliver)],
      ['its image published', () => upload(t, w.admin, image), (d) => sliverIn(d, sliver).image.sha256 !== null],
      ['the resources changed', () => ok(t.app, 200, 'PATCH', `/v1/slices/${slice}`, w.pi, { resources: { memory_mb: 256 } }), (d) => sliverIn(d, sliver).resources.memory_mb === 256],
      ['the slice renewed', () => ok(t.app, 200, 'POST', `/v1/slices/${slice}/renew`, w.pi, { expires_at: new Date(Date.now() + 3 * 86400_000).toISOString() }), (d) => Date.parse(sliverIn(d, sliver).expires_at) < Date.now() + 4 * 86400_000],
      ['a sliver restarted', () => ok(t.app, 202, 'POST', `/v1/slivers/${sliver}/actions`, w.pi, { action: 'restart' }), (d) => sliverIn(d, sliver).restart_seq === 1],
      ['a member removed', () => call(t.app, 'DELETE', `/v1/slices/${slice}/members/${keyOwner}`, w.pi), (d) => !hasKey(d, sliver) && hasKey(d, w.ids.sliver)],
      ['a key removed', () => call(t.app, 'DELETE', `/v1/users/${keyOwner}/keys/${keyId}`, w.user), (d) => !hasKey(d, w.ids.sliver)],
      ['a sliver deleted', () => ok(t.app, 202, 'DELETE', `/v1/slivers/${sliver}`, w.pi), (d) => sliverIn(d, sliver).desired === 'deleted'],
    ];
    for (const [what, change, holds] of changes) {
      await change();
      const next = await poll(t, node, w.node, etag);
      expect.soft(next.status, what).toBe(200);
      if (next.status === 200) {
        expect(holds(next.doc), what).toBe(true);
        etag = next.etag;
      }
      // And remembered again.
      expect((await poll(t, node, w.node, etag)).status, what).toBe(304);
    }
  });

  it('shows a write that touched no node once its bound passes', async () => {
    const short = await testApp({ db: t.db, config: { docCacheSeconds: 1 } });
    try {
      const first = await poll(short, w.ids.node, w.node, null);
      await t.db.query("UPDATE slices SET resources = resources || '{\"net_kbps\": 4242}' WHERE name = $1", [w.slice]);
      // Still the remembered document…
      expect((await poll(short, w.ids.node, w.node, first.etag)).status).toBe(304);
      await new Promise((r) => setTimeout(r, 1100));
      // …until its bound.
      const later = await poll(short, w.ids.node, w.node, first.etag);
      expect(later.status).toBe(200);
      expect(later.doc.slivers.find((s: any) => s.id === w.ids.sliver).resources.net_kbps).toBe(4242);
    } finally {
      await short.close();
    }
  });

  it('reads a document polls still use again at its bound and keeps it when unchanged; one no poll used goes', async () => {
    const short = await testApp({ db: t.db, config: { docCacheSeconds: 1 } });
    try {
      const first = await poll(short, w.ids.node, w.node, null);
      expect(short.app.ctx.documents.remembered(w.ids.node)).toBe(first.etag);
      expect((await poll(short, w.ids.node, w.node, first.etag)).status).toBe(304);
      await new Promise((r) => setTimeout(r, 1300));
      // Read again at its bound, the same: still known, with no gap.
      expect(short.app.ctx.documents.remembered(w.ids.node)).toBe(first.etag);
      // No poll used it during the next bound: forgotten.
      await new Promise((r) => setTimeout(r, 1300));
      expect(short.app.ctx.documents.remembered(w.ids.node)).toBeUndefined();
    } finally {
      await short.close();
    }
  });

  it("reads a document after a change ahead of the nodes' waiting statements, and checks one at its bound after them", async () => {
    // A lane of one connection over the test database that records what runs, in order.
    const ran: string[] = [];
    const lane = laneOf({ ...t.db, query: ((sql: string, params?: unknown[]) => {
      ran.push(/^\s*WITH mine/.test(sql) ? 'the document' : String(params?.[0]));
      return t.db.query(sql, params);
    }) as Queryable['query'], transaction: (fn) => t.db.transaction(fn) }, 1);
    const deps = { db: lane, config: { publicUrl: 'http://127.0.0.1' } };
    const cache = new DocumentCache({ fanout: memoryFanout(), ttlMs: 400 });
    const waitFor = async (cond: () => boolean) => {
      for (const end = Date.now() + 10_000; !cond(); await new Promise((r) => setTimeout(r, 5))) if (Date.now() > end) throw new Error('timed out');
    };
    const hold = () => {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const holding = lane.transaction(async () => held);
      return async () => {
        release();
        await holding;
      };
    };
    const report = (name: string) => lane.query('SELECT $1::text', [name]);
    try {
      // A poll woken by a change, while two reports wait for the lane.
      let release = hold();
      await waitFor(() => lane.active === 1);
      const reports = [report('report 1'), report('report 2')];
      const woken = cache.get(deps, w.ids.node, { fresh: true });
      await waitFor(() => lane.waiting === 3);
      await release();
      const { etag } = await woken;
      await Promise.all(reports);
      expect(ran).toEqual(['the document', 'report 1', 'report 2']);

      // At its bound (300–400 ms) a document a poll used is checked: after the reports that wait.
      expect((await cache.get(deps, w.ids.node, { unless: etag })).doc).toBeNull();
      ran.length = 0;
      release = hold();
      await waitFor(() => lane.active === 1);
      const first = report('report 3');
      await waitFor(() => lane.waiting === 2); // the check has come
      const later = report('report 4');
      await release();
      await Promise.all([first, later]);
      await waitFor(() => ran.length === 3);
      expect(ran).toEqual(['report 3', 'report 4', 'the document']);
    } finally {
      cache.close();
    }
  });

  it('keeps nothing when a change comes while it subscribes (and does not throw)', async () => {
    // With Redis, a message for a channel the node's poll already holds can arrive before
    // subscribe() returns: it crashed the registry (stop 22's first CI run).
    const inner = memoryFanout();
    const early: Fanout = {
      kind: 'memory', healthy: true, epoch: 1,
      publish: (c, m) => inner.publish(c, m),
      async subscribe(c, h) {
        const off = await inner.subscribe(c, h);
        h('changed');
        return off;
      },
      close: () => inner.close(),
    };
    const cache = new DocumentCache({ fanout: early, ttlMs: 60_000 });
    const got = await cache.get({ db: t.db, config: { publicUrl: 'http://127.0.0.1' } }, w.ids.node);
    expect(got.doc?.node_id).toBe(w.ids.node);
    expect(cache.size).toBe(0);
    cache.close();
  });

  it('remembers nothing with PLANETLITE_DOC_CACHE_SECONDS=0, or while the fan-out is down or reconnected', async () => {
    const inner = memoryFanout();
    let healthy = true;
    let epoch = 1;
    const fanout: Fanout = { kind: 'memory', get healthy() { return healthy; }, get epoch() { return epoch; }, publish: (c, m) => inner.publish(c, m), subscribe: (c, h) => inner.subscribe(c, h), close: () => inner.close() };
    const flaky = await testApp({ db: t.db, fanout });
    const off = await testApp({ db: t.db, config: { docCacheSeconds: 0 } });
    let kbps = 5000;
    const bump = () => t.db.query("UPDATE slices SET resources = resources || jsonb_build_object('net_kbps', $2::int) WHERE name = $1", [w.slice, ++kbps]);
    try {
      for (const [what, app, before] of [
        ['cache off', off, () => undefined],
        ['fan-out down', flaky, () => (healthy = false)],
        ['fan-out reconnected', flaky, () => ((healthy = true), epoch++)],
      ] as const) {
        const first = await poll(app, w.ids.node, w.node, null);
        before();
        await bump();
        const next = await poll(app, w.ids.node, w.node, first.etag);
        expect(next.status, what).toBe(200);
        expect(next.doc.slivers.find((s: any) => s.id === w.ids.sliver).resources.net_kbps, what).toBe(kbps);
      }
      expect(flaky.app.ctx.documents.size).toBe(1);
    } finally {
      await flaky.close();
      await off.close();
    }
  });
});

function upload(t: TestApp, admin: string, name: string): Promise<unknown> {
  // gzip's magic first: an archive as the registry takes it.
  const archive = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), randomBytes(64 * 1024)]);
  return t.app.inject({
    method: 'POST',
    url: `/v1/images?name=${name}`,
    headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${admin}`, 'x-content-sha256': createHash('sha256').update(archive).digest('hex') },
    payload: archive,
  }).then((r) => {
    if (r.statusCode !== 201) throw new Error(`upload: ${r.statusCode} ${r.body}`);
  });
}
