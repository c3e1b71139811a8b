// A lane of the pool (laneOf): one kind of caller holds at most its share of the connections, and
// waits its turn in memory beyond it, while the others still find a free connection at once. On a
// real PostgreSQL server with a pool of 3 and a lane of 2.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { laneOf, openDatabase, type Database, type Queryable } from './database.js';
import { createTestDatabase } from '../../../test/harness/services.js';

describe('a lane of the pool', () => {
  let db: Database;
  beforeAll(async () => {
    db = await openDatabase({ url: await createTestDatabase(inject('pgUrl'), 'lane'), poolSize: 3 });
  });
  afterAll(async () => {
    await db?.close();
  });

  it('runs at most its share at once, queues the rest in memory, and leaves the others a connection', async () => {
    const lane = laneOf(db, 2);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    // Two transactions of the lane hold their connections until released.
    const holders = [1, 2].map((n) => lane.transaction(async (tx) => {
      await tx.query('SELECT $1::int AS n', [n]);
      await held;
      return n;
    }));
    const third = lane.query<{ n: number }>('SELECT 3 AS n');
    await until(() => lane.active === 2 && lane.waiting === 1);
    // The pool's third connection is free for everyone else: answered while the lane waits.
    expect((await db.query<{ n: number }>('SELECT 4 AS n')).rows[0]!.n).toBe(4);
    expect(db.poolState!()).toMatchObject({ waiting: 0 });
    expect(lane.waiting).toBe(1);
    release();
    expect(await Promise.all(holders)).toEqual([1, 2]);
    expect((await third).rows[0]!.n).toBe(3);
    expect([lane.active, lane.waiting]).toEqual([0, 0]);
  });

  it('lets a statement asked ahead pass the waiting ones, and later ones pass one asked behind', async () => {
    const lane = laneOf(db, 1);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const holder = lane.transaction(async (tx) => {
      await tx.query('SELECT 1');
      await held;
    });
    await until(() => lane.active === 1);
    const order: string[] = [];
    const ask = (via: Queryable, name: string) => via.query<{ n: string }>('SELECT $1::text AS n', [name]).then(({ rows }) => order.push(rows[0]!.n));
    // In the order a busy replica gets them: a document check, two reports, then a poll woken by a change.
    const asked = [ask(lane.behind, 'check'), ask(lane, 'report 1'), ask(lane, 'report 2'), ask(lane.ahead, 'woken poll')];
    await until(() => lane.waiting === 4);
    release();
    await holder;
    await Promise.all(asked);
    expect(order).toEqual(['woken poll', 'report 1', 'report 2', 'check']);
  });
});

async function until(cond: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}
