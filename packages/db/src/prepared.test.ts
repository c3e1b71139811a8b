// Statements with parameters are prepared once per connection of the pool (parse and plan once),
// on a real PostgreSQL server; scripts without parameters still run as several statements.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openDatabase, type Database } from './database.js';
import { createTestDatabase } from '../../../test/harness/services.js';

describe('prepared statements on PostgreSQL', () => {
  let db: Database;
  beforeAll(async () => {
    db = await openDatabase({ url: await createTestDatabase(inject('pgUrl'), 'prep'), poolSize: 2 });
  });
  afterAll(async () => {
    await db?.close();
  });

  it('prepares a statement with parameters once on a connection and runs it again by name', async () => {
    const sql = 'SELECT $1::int + 1 AS n';
    const seen = await db.transaction(async (tx) => {
      const answers = [];
      for (const v of [1, 2, 3]) answers.push((await tx.query<{ n: number }>(sql, [v])).rows[0]!.n);
      const { rows } = await tx.query<{ name: string; statement: string }>('SELECT name, statement FROM pg_prepared_statements');
      return { answers, prepared: rows };
    });
    expect(seen.answers).toEqual([2, 3, 4]);
    // One entry for the three runs: parsed and planned once.
    expect(seen.prepared.filter((r) => r.statement === sql)).toHaveLength(1);
    expect(seen.prepared.find((r) => r.statement === sql)!.name).toMatch(/^pl_\d+$/);
  });

  it('keeps the same name for the same text across the pool, and distinct names for distinct texts', async () => {
    await Promise.all([1, 2, 3, 4].map((v) => db.query('SELECT $1::text AS t', [String(v)])));
    await db.query('SELECT $1::text || $2::text AS t', ['a', 'b']);
    const names = await db.transaction(async (tx) => {
      await tx.query('SELECT $1::text AS t', ['x']);
      await tx.query('SELECT $1::text || $2::text AS t', ['a', 'b']);
      const { rows } = await tx.query<{ name: string; statement: string }>('SELECT name, statement FROM pg_prepared_statements');
      return new Map(rows.map((r) => [r.statement, r.name]));
    });
    expect(names.get('SELECT $1::text AS t')).toBeDefined();
    expect(names.get('SELECT $1::text || $2::text AS t')).toBeDefined();
    expect(names.get('SELECT $1::text AS t')).not.toBe(names.get('SELECT $1::text || $2::text AS t'));
  });

  it('runs a script of several statements without parameters (as migrations do)', async () => {
    await db.query('CREATE TABLE t_script (n int); INSERT INTO t_script VALUES (1), (2)');
    expect(Number((await db.query<{ c: number }>('SELECT count(*) AS c FROM t_script')).rows[0]!.c)).toBe(2);
  });
});

describe('prepared statements turned off (PLANETLITE_DB_PREPARE=false)', () => {
  it('runs every statement unnamed', async () => {
    const db = await openDatabase({ url: await createTestDatabase(inject('pgUrl'), 'noprep'), poolSize: 1, prepare: false });
    try {
      const prepared = await db.transaction(async (tx) => {
        for (const v of [1, 2]) await tx.query('SELECT $1::int AS n', [v]);
        return (await tx.query('SELECT name FROM pg_prepared_statements')).rows;
      });
      expect(prepared).toEqual([]);
    } finally {
      await db.close();
    }
  });
});
