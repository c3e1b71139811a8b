// Push to nodes and people: desired-state long-polls and the event stream wake on changes,
// within one registry (replicas.test.ts covers two registry processes).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PlanetLiteClient, type Event } from '@planetlite/api';
import { makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

describe('within one registry', () => {
  let t: TestApp;
  let w: World;
  let url: string;
  beforeAll(async () => {
    t = await testApp();
    w = await makeWorld(t.app);
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    const addr = t.app.server.address();
    url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });
  afterAll(() => t.close());

  it('a long-poll answers 304 when nothing changes, and wakes with the new state when something does', async () => {
    const node = new PlanetLiteClient({ registry: url, token: w.node });
    const first = await node.desiredState(w.ids.node);
    expect(first.state?.slivers).toHaveLength(1);
    expect(first.etag).toMatch(/^"/);
    const idle = await node.desiredState(w.ids.node, { etag: first.etag, wait: 1 });
    expect(idle.state).toBeNull();

    const poll = node.desiredState(w.ids.node, { etag: first.etag, wait: 30 });
    await new Promise((r) => setTimeout(r, 200));
    await ok(t.app, 202, 'POST', `/v1/slivers/${w.ids.sliver}/actions`, w.pi, { action: 'stop' });
    const woke = await poll;
    expect(woke.state?.slivers[0]?.desired).toBe('stopped');
    expect(woke.etag).not.toBe(first.etag);
  });

  it('a member key change reaches the desired state of nodes carrying the slice', async () => {
    const node = new PlanetLiteClient({ registry: url, token: w.node });
    const before = await node.desiredState(w.ids.node);
    const { execFileSync } = await import('node:child_process');
    const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
    const dir = mkdtempSync('/tmp/pl-key-');
    try {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'member', '-f', `${dir}/k`]);
      const key = readFileSync(`${dir}/k.pub`, 'utf8').trim();
      const poll = node.desiredState(w.ids.node, { etag: before.etag, wait: 30 });
      await ok(t.app, 201, 'POST', `/v1/users/${w.ids.user}/keys`, w.user, { key });
      const after = await poll;
      expect(after.state?.slivers[0]?.keys).toContain(key);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the event stream sends the backlog, then live events the caller may see', async () => {
    const member = new PlanetLiteClient({ registry: url, token: w.user });
    const outsider = new PlanetLiteClient({ registry: url, token: w.outsider });
    const seen: Event[] = [];
    const seenByOutsider: Event[] = [];
    const stop = new AbortController();
    const streams = [
      member.streamEvents({ slice: w.slice }, (e) => seen.push(e), stop.signal),
      outsider.streamEvents({}, (e) => seenByOutsider.push(e), stop.signal),
    ];
    const until = async (pred: () => boolean) => {
      for (let i = 0; i < 100 && !pred(); i++) await new Promise((r) => setTimeout(r, 50));
    };
    await until(() => seen.some((e) => e.type === 'slice.created'));
    expect(seen.map((e) => e.type)).toContain('slice.created');
    await ok(t.app, 202, 'POST', `/v1/slivers/${w.ids.sliver}/actions`, w.pi, { action: 'freeze' });
    await until(() => seen.some((e) => e.type === 'sliver.action' && e.data.action === 'freeze'));
    stop.abort();
    await Promise.all(streams);
    expect(seen.filter((e) => e.data.action === 'freeze')).toHaveLength(1);
    const ids = seen.map((e) => e.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    // The outsider sees node events but nothing of a slice it has no part in.
    expect(seenByOutsider.some((e) => e.type === 'node.enrolled')).toBe(true);
    expect(seenByOutsider.filter((e) => e.slice !== null)).toEqual([]);
  });
});
