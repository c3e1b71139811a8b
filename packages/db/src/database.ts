// A Database is either a pg Pool on a real server or PGlite in-process; both speak the same SQL.
import pg from 'pg';
import { mkdirSync } from 'node:fs';
import type { Logger } from '@planetlite/core';

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: R[]; rowCount: number }>;
}

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Runs fn in one transaction (BEGIN … COMMIT, ROLLBACK on throw). */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  /** postgres:// URL of a server; absent: embedded PGlite persisted under dataDir. */
  url?: string | undefined;
  /** Where PGlite keeps its files; absent with no url: in memory (tests). */
  dataDir?: string | undefined;
  poolSize?: number;
  logger?: Logger;
}

// Keep int8 (bigint, counts) as JS numbers: every int8 here is far below 2^53.
pg.types.setTypeParser(20, (v: string) => Number(v));

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
  if (opts.url) return openPostgres(opts.url, opts.poolSize ?? 20, opts.logger);
  return openPglite(opts.dataDir);
}

async function openPostgres(url: string, max: number, logger?: Logger): Promise<Database> {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle client losing its server must not crash the process; the next query reconnects.
  pool.on('error', (err) => logger?.warn({ err }, 'postgres idle client error'));
  await pool.query('SELECT 1');
  return {
    kind: 'postgres',
    async query(sql, params) {
      const res = await pool.query(sql, params as unknown[]);
      return { rows: res.rows, rowCount: res.rowCount ?? 0 };
    },
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const tx: Queryable = {
          async query(sql, params) {
            const res = await client.query(sql, params as unknown[]);
            return { rows: res.rows, rowCount: res.rowCount ?? 0 };
          },
        };
        const out = await fn(tx);
        await client.query('COMMIT');
        return out;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    },
    async close() {
      await pool.end();
    },
  };
}

async function openPglite(dataDir?: string): Promise<Database> {
  const { PGlite } = await import('@electric-sql/pglite');
  if (dataDir) mkdirSync(dataDir, { recursive: true });
  const db = dataDir ? await PGlite.create(dataDir) : await PGlite.create();
  const wrap = (q: { query: (sql: string, params?: unknown[]) => Promise<{ rows: unknown[]; affectedRows?: number }> }): Queryable => ({
    async query<R>(sql: string, params?: unknown[]) {
      const res = await q.query(sql, params);
      // PGlite counts affected rows for writes only; pg's rowCount also counts selected rows.
      return { rows: res.rows as R[], rowCount: Math.max(res.affectedRows ?? 0, res.rows.length) };
    },
  });
  const plain = wrap(db);
  return {
    kind: 'pglite',
    query: plain.query,
    async transaction(fn) {
      return db.transaction((tx) => fn(wrap(tx)));
    },
    async close() {
      await db.close();
    },
  };
}
