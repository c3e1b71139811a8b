// The front door's logins made ahead: one per sliver and account, each handed to one login only,
// closed when their sliver leaves the table.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type ssh2 from 'ssh2';
import { Spares, type SliverLogin, type SpareKey } from '../src/frontdoor/spares.js';

/** A stand-in for an ssh2 connection: only what Spares touches (end, close, the socket). */
class Login extends EventEmitter {
  ended = false;
  _sock = { destroyed: false, writable: true };
  constructor(readonly key: SpareKey, readonly n: number) {
    super();
  }
  end(): void {
    this.ended = true;
    this._sock.destroyed = true;
    this.emit('close');
  }
}

function pool(idleMs?: number) {
  const made: Login[] = [];
  const gates: Array<() => void> = [];
  let hold = false;
  const spares = new Spares(async (key) => {
    const l = new Login(key, made.length);
    made.push(l);
    if (hold) await new Promise<void>((r) => gates.push(r));
    return { client: l as unknown as ssh2.Client, bind: () => {} } satisfies SliverLogin;
  }, idleMs);
  return { spares, made, holdNext: (on: boolean) => (hold = on), release: () => gates.splice(0).forEach((g) => g()) };
}
const login = (l: SliverLogin) => l.client as unknown as Login;
const A = { sliver: 's-a', address: '10.160.0.2', user: 'slice_a' };
const B = { sliver: 's-b', address: '10.160.0.6', user: 'slice_b' };

describe('Spares', () => {
  it('makes one login ahead per sliver and account, however often it is warmed', async () => {
    const { spares, made } = pool();
    spares.warm(A);
    spares.warm(A);
    spares.warm({ ...A, user: 'root' });
    expect(made.map((m) => m.key.user)).toEqual(['slice_a', 'root']);
    expect(spares.size).toBe(2);
  });

  it('hands each login to one taker only, for its own sliver and account, and makes the next one behind it', async () => {
    const { spares, made } = pool();
    spares.warm(A);
    spares.warm(B);
    const [a1, b1, a2] = [await spares.take(A), await spares.take(B), await spares.take(A)];
    expect([login(a1).key, login(b1).key, login(a2).key]).toEqual([A, B, A]);
    expect(new Set([a1, b1, a2].map((l) => login(l).n)).size).toBe(3);
    // A spare for A and one for B wait for the next logins.
    expect(spares.size).toBe(2);
    expect(made.filter((m) => m.key === A).length).toBe(3);
  });

  it('closes the spares of a sliver that leaves the table, also one still being made', async () => {
    const { spares, made, holdNext, release } = pool();
    spares.warm(A);
    holdNext(true);
    spares.warm(B);
    await new Promise((r) => setImmediate(r));
    spares.retain([{ sliver: A.sliver, address: A.address }]);
    expect(spares.size).toBe(1);
    release();
    await new Promise((r) => setImmediate(r));
    expect(made.find((m) => m.key === B)!.ended).toBe(true);
    // Same sliver at another address (its slot changed): dropped too.
    spares.retain([{ sliver: A.sliver, address: '10.160.0.10' }]);
    await new Promise((r) => setImmediate(r));
    expect(made.find((m) => m.key === A)!.ended).toBe(true);
    expect(spares.size).toBe(0);
  });

  it('replaces a spare that closed, and closes spares nobody took', async () => {
    const { spares, made } = pool(50);
    spares.warm(A);
    await new Promise((r) => setImmediate(r));
    made[0]!.end();
    const fresh = await spares.take(A);
    expect(login(fresh).ended).toBe(false);
    expect(login(fresh).n).not.toBe(0);
    await new Promise((r) => setTimeout(r, 120));
    // The spare made beside the fresh one ended idle; the taken one is the user's.
    expect(made.filter((m) => m !== login(fresh)).every((m) => m.ended)).toBe(true);
    expect(login(fresh).ended).toBe(false);
    expect(spares.size).toBe(0);
  });
});
