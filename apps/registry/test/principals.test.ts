// A replica remembers who a token or node key stands for, and forgets it the moment a write ends
// it, there and on every other replica; while it cannot hear the others it remembers nothing.
// (Two replicas on real Redis: replicas.test.ts, a token ended on one refused by the other.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '@planetlite/core';
import { memoryFanout, type Fanout } from '@planetlite/fanout';
import { AUTH_CHANNEL, PrincipalCache } from '../src/services/principals.js';
import { hashSecret } from '../src/services/secrets.js';
import type { Principal } from '../src/services/authz.js';
import { call, login, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

const log = createLogger({ name: 'test', level: 'silent' });
const user = (id: string): Principal => ({ kind: 'user', id, email: `${id}@x.test`, name: id, site: null, roles: [], admin: false, tokenHash: `h-${id}` });
const node = (id: string): Principal => ({ kind: 'node', id, site: 's' });

/** A fan-out whose health and connection count a test sets (the shape of a Redis outage). */
function flakyFanout(): Fanout & { down: boolean; reconnect(): void } {
  const inner = memoryFanout();
  let epoch = 1;
  return {
    kind: 'redis',
    down: false,
    get healthy() {
      return !this.down;
    },
    get epoch() {
      return epoch;
    },
    reconnect() {
      epoch++;
    },
    publish: (c, m) => inner.publish(c, m),
    subscribe: (c, h) => inner.subscribe(c, h),
    close: () => inner.close(),
  };
}

/** A load that counts its calls. */
function counted(p: Principal | null, until: number | null = null, keep?: boolean) {
  const load = async () => {
    load.calls++;
    return p && { principal: p, until, ...(keep === undefined ? {} : { keep }) };
  };
  load.calls = 0;
  return load;
}

describe('the principal cache', () => {
  it('remembers an answer, and looks again once the secret itself runs out', async () => {
    const c = new PrincipalCache({ fanout: memoryFanout(), log });
    await c.start();
    const forever = counted(user('u1'));
    expect(await c.lookup('h1', forever)).toEqual(user('u1'));
    expect(await c.lookup('h1', forever)).toEqual(user('u1'));
    expect(forever.calls).toBe(1);

    const soon = counted(user('u2'), Date.now() + 40);
    await c.lookup('h2', soon);
    await c.lookup('h2', soon);
    expect(soon.calls).toBe(1);
    await new Promise((r) => setTimeout(r, 60));
    await c.lookup('h2', soon);
    expect(soon.calls).toBe(2);
  });

  it('never remembers an unknown secret, or one the caller says not to keep', async () => {
    const c = new PrincipalCache({ fanout: memoryFanout(), log });
    await c.start();
    const unknown = counted(null);
    expect(await c.lookup('x', unknown)).toBeNull();
    expect(await c.lookup('x', unknown)).toBeNull();
    expect(unknown.calls).toBe(2);
    const grace = counted(node('n1'), Date.now() + 60_000, false);
    await c.lookup('old-key', grace);
    await c.lookup('old-key', grace);
    expect(grace.calls).toBe(2);
    expect(c.size).toBe(0);
  });

  it('forgets a token, every token of a user, or every key of a node, on this replica and on the others', async () => {
    const fanout = memoryFanout();
    const a = new PrincipalCache({ fanout, log });
    const b = new PrincipalCache({ fanout, log });
    await Promise.all([a.start(), b.start()]);
    const loads = { t1: counted(user('u1')), t2: counted(user('u1')), t3: counted(user('u2')), k1: counted(node('n1')), k2: counted(node('n2')) };
    for (const c of [a, b]) for (const [h, load] of Object.entries(loads)) await c.lookup(h, load);
    expect([a.size, b.size]).toEqual([5, 5]);

    await a.forget({ token: 't1' });
    await b.forget({ user: 'u2' });
    await a.forget({ node: 'n1' });
    for (const c of [a, b]) for (const [h, load] of Object.entries(loads)) await c.lookup(h, load);
    // Each forgotten one was looked up again on both replicas; the others were not.
    expect(Object.fromEntries(Object.entries(loads).map(([h, l]) => [h, l.calls]))).toEqual({ t1: 4, t2: 2, t3: 4, k1: 4, k2: 2 });
  });

  it("answers a forget only once a replica whose copy comes late has forgotten it too", async () => {
    const fanout = memoryFanout();
    // Replica b hears everything 50 ms late (Redis writes to one subscriber after another).
    const late: Fanout = {
      ...fanout,
      publish: (c, m) => fanout.publish(c, m),
      subscribe: (c, h) => fanout.subscribe(c, (m) => void setTimeout(() => h(m), 50)),
    };
    const a = new PrincipalCache({ fanout, log });
    const b = new PrincipalCache({ fanout: late, log });
    await Promise.all([a.start(), b.start()]);
    const load = counted(user('u1'));
    await a.lookup('t1', load);
    await b.lookup('t1', load);
    await a.forget({ token: 't1' });
    // No wait here: b must already have let it go.
    expect([a.size, b.size]).toEqual([0, 0]);
  });

  it('waits a bounded time for a replica that never confirms, and says so', async () => {
    const fanout = memoryFanout();
    const warned: string[] = [];
    const warnLog = { warn: (_o: unknown, msg: string) => void warned.push(msg) } as unknown as typeof log;
    const a = new PrincipalCache({ fanout, log: warnLog, confirmMs: 100 });
    await a.start();
    // A listener that hears forgets and never confirms (a stalled replica).
    await fanout.subscribe(AUTH_CHANNEL, () => undefined);
    const before = Date.now();
    await a.forget({ token: 't1' });
    expect(Date.now() - before).toBeGreaterThanOrEqual(95);
    expect(warned).toEqual(['not every replica confirmed forgetting an ended secret in time']);
  });

  it('does not keep an answer read before a forget that came while it was being read', async () => {
    const c = new PrincipalCache({ fanout: memoryFanout(), log });
    await c.start();
    let release!: () => void;
    const slow = async () => {
      await new Promise<void>((r) => (release = r));
      return { principal: user('u1'), until: null };
    };
    const pending = c.lookup('h', slow);
    await new Promise((r) => setTimeout(r, 10));
    await c.forget({ user: 'u1' });
    release();
    expect(await pending).toEqual(user('u1'));
    expect(c.size).toBe(0);
  });

  it('remembers nothing while the fan-out is down, and drops what it had when it reconnects', async () => {
    const fanout = flakyFanout();
    const c = new PrincipalCache({ fanout, log });
    await c.start();
    const load = counted(user('u1'));
    await c.lookup('h', load);
    expect(c.size).toBe(1);
    fanout.down = true;
    await c.lookup('h', load);
    await c.lookup('h', load);
    expect([load.calls, c.size]).toEqual([3, 0]);
    fanout.down = false;
    await c.lookup('h', load);
    await c.lookup('h', load);
    expect([load.calls, c.size]).toEqual([4, 1]);
    // A reconnect between two lookups: forgets sent meanwhile may be lost.
    fanout.reconnect();
    await c.lookup('h', load);
    expect(load.calls).toBe(5);
  });

  it('remembers nothing when it was never started (PLANETLITE_AUTH_CACHE_SECONDS=0)', async () => {
    const c = new PrincipalCache({ fanout: memoryFanout(), log });
    const load = counted(user('u1'));
    await c.lookup('h', load);
    await c.lookup('h', load);
    expect([load.calls, c.size]).toEqual([2, 0]);
  });
});

describe('the registry with its principal cache', () => {
  let t: TestApp;
  let uncached: TestApp;
  let w: World;
  beforeAll(async () => {
    t = await testApp();
    w = await makeWorld(t.app);
    uncached = await testApp({ config: { authCacheSeconds: 0 } });
  });
  afterAll(async () => {
    await t?.close();
    await uncached?.close();
  });

  const email = () => `pi${w.site.slice(5)}@${w.site}.test`;
  /** Ends a token behind the registry's back: a row deleted by hand, no forget sent. */
  const dropRow = (db: TestApp['db'], token: string) => db.query('DELETE FROM auth_tokens WHERE token_hash = $1', [hashSecret(token)]);

  it('answers a token from memory, and refuses it at once after logout', async () => {
    const token = await login(t.app, email(), 'password-123');
    await ok(t.app, 200, 'GET', '/v1/users/me', token);
    await dropRow(t.db, token);
    // Still open: remembered (the database no longer has it).
    await ok(t.app, 200, 'GET', '/v1/users/me', token);

    const other = await login(t.app, email(), 'password-123');
    await ok(t.app, 200, 'GET', '/v1/users/me', other);
    expect((await call(t.app, 'POST', '/v1/auth/logout', other)).status).toBe(204);
    const after = await call(t.app, 'GET', '/v1/users/me', other);
    expect([after.status, after.body.code]).toEqual([401, 'token_invalid']);
    // Ending all of the user's tokens also ends the one only memory still had.
    await ok(t.app, 200, 'DELETE', `/v1/users/${w.ids.pi}/tokens`, w.admin);
    expect((await call(t.app, 'GET', '/v1/users/me', token)).status).toBe(401);
  });

  it('refuses a node key at once once revoked, though it was remembered', async () => {
    await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    await ok(t.app, 200, 'DELETE', `/v1/nodes/${w.ids.node}/key`, w.admin);
    const r = await call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    expect([r.status, r.body.code]).toEqual([401, 'node_key_revoked']);
  });

  it('looks every token up with PLANETLITE_AUTH_CACHE_SECONDS=0', async () => {
    const u = await makeWorld(uncached.app);
    const token = await login(uncached.app, `pi${u.site.slice(5)}@${u.site}.test`, 'password-123');
    await ok(uncached.app, 200, 'GET', '/v1/users/me', token);
    await dropRow(uncached.db, token);
    expect((await call(uncached.app, 'GET', '/v1/users/me', token)).status).toBe(401);
    expect(uncached.app.ctx.principals.size).toBe(0);
  });
});
