// A Database is either a pg Pool on a real server or PGlite in-process; both speak the same SQL.
import pg from 'pg';
import PQueue from 'p-queue';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '@planetlite/core';

export interface QueryOptions {
  /** Plan this statement for each call's values (not prepared): for a statement whose generic
   * plan costs more than planning it each time. */
  planEachCall?: boolean;
}

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: unknown[], opts?: QueryOptions): Promise<{ rows: R[]; rowCount: number }>;
}

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Runs fn in one transaction (BEGIN … COMMIT, ROLLBACK on throw). */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  close(): Promise<void>;
  /** PostgreSQL only: the pool's connections now, and the queries waiting for one. */
  poolState?(): { connections: number; idle: number; waiting: number };
}

/** A lane of the database (laneOf): its statements in turn, and the queues by how urgent they are. */
export interface Lane extends Database {
  /** Statements and transactions waiting for their turn, and running. */
  readonly waiting: number;
  readonly active: number;
  /** The same lane, taking its turn before every waiting statement of the others: for a read
   * someone is waiting on right now (a node's poll woken by a change). */
  readonly ahead: Queryable;
  /** The same lane, taking its turn after every waiting statement: for work nobody waits on. */
  readonly behind: Queryable;
}

/**
 * The same database for one kind of caller, with at most `max` of its statements and transactions
 * at once; the rest wait their turn here, not in the pool's queue. A lane narrower than the pool
 * keeps connections free for everyone else: nodes' polls and lookups, thousands at once after a
 * restart, once held every connection while a user's action waited behind them for up to a second.
 * Within the lane, a statement asked for `ahead` passes the waiting ones, and one asked for
 * `behind` lets every later one pass it.
 */
export function laneOf(db: Database, max: number): Lane {
  const turns = new PQueue({ concurrency: max });
  const inTurn = (priority: number) => <T>(fn: () => Promise<T>): Promise<T> => turns.add(fn, { priority });
  const at = (priority: number): Queryable => {
    const turn = inTurn(priority);
    return { query: ((sql: string, params?: unknown[], opts?: QueryOptions) => turn(() => db.query(sql, params, opts))) as Queryable['query'] };
  };
  const turn = inTurn(0);
  return {
    kind: db.kind,
    query: at(0).query,
    transaction: (fn) => turn(() => db.transaction(fn)),
    close: () => db.close(),
    ...(db.poolState ? { poolState: () => db.poolState!() } : {}),
    ahead: at(1),
    behind: at(-1),
    get waiting() {
      return turns.size;
    },
    get active() {
      return turns.pending;
    },
  };
}

export interface OpenDatabaseOptions {
  /** postgres:// URL of a server; absent: embedded PGlite persisted under dataDir. */
  url?: string | undefined;
  /** The registry's data dir: PGlite keeps its files in <dataDir>/db. Absent with no url: in memory (tests). */
  dataDir?: string | undefined;
  /** Entries of the data dir that belong beside the database (default DATA_DIR_SIBLINGS). */
  siblings?: readonly string[];
  poolSize?: number;
  /** PostgreSQL only: prepare each statement with parameters once per connection (default true).
   * Off for a pooler that cannot keep named statements (PgBouncer in transaction mode before 1.21). */
  prepare?: boolean;
  logger?: Logger;
  /**
   * PGlite only: pass PostgreSQL's flushes to the kernel (default true). False is PGlite's own
   * behaviour, where a commit can be lost to a power cut; only benchmarks compare against it.
   */
  durable?: boolean;
}

// Keep int8 (bigint, counts) as JS numbers: every int8 here is far below 2^53.
pg.types.setTypeParser(20, (v: string) => Number(v));

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
  if (opts.url) return openPostgres(opts.url, opts.poolSize ?? 20, opts.prepare ?? true, opts.logger);
  return openPglite(opts.dataDir ? await prepareDataDir(opts.dataDir, opts.siblings ?? DATA_DIR_SIBLINGS, opts.logger) : undefined, opts.durable ?? true);
}

/** Why the database cannot be opened, in one line for the operator. */
export class DatabaseOpenError extends Error {
  override name = 'DatabaseOpenError';
}

/** What else the registry keeps in its data dir: image archives, TLS files. */
export const DATA_DIR_SIBLINGS: readonly string[] = ['images', 'tls'];
/** Certificates and keys beside the database (a registry's own CA) are its own files too. */
const TLS_FILE = /\.(pem|crt|key)$/;

/** Files and folders of a PostgreSQL data directory (what PGlite writes). */
const PG_ENTRY = /^(PG_VERSION|base|global|pg_[a-z_]+|pg_hba\.conf|pg_ident\.conf|postgresql(\.auto)?\.conf|postmaster\.(pid|opts))$/;

/**
 * The folder PGlite opens: <dataDir>/db. A data dir from before that folder (the database at its
 * top level) is moved into it; a data dir holding other things and no database is refused, so a
 * wrong --data-dir does not get a database written among someone's files.
 */
async function prepareDataDir(dataDir: string, siblings: readonly string[], logger?: Logger): Promise<string> {
  const dbDir = join(dataDir, 'db');
  await mkdir(dataDir, { recursive: true });
  const entries = await readdir(dataDir);
  if (entries.includes('PG_VERSION')) {
    await mkdir(dbDir, { recursive: true });
    // PG_VERSION last: a move cut short is found and finished on the next start.
    const pg = entries.filter((e) => PG_ENTRY.test(e)).sort((a, b) => Number(a === 'PG_VERSION') - Number(b === 'PG_VERSION'));
    for (const e of pg) await rename(join(dataDir, e), join(dbDir, e));
    logger?.info({ dataDir, dbDir }, 'embedded database moved into its own folder');
    return dbDir;
  }
  const strangers = entries.filter((e) => e !== 'db' && !e.startsWith('.') && !siblings.includes(e) && !TLS_FILE.test(e));
  if (strangers.length && !existsSync(join(dbDir, 'PG_VERSION'))) {
    const shown = strangers.slice(0, 3).join(', ') + (strangers.length > 3 ? ', …' : '');
    throw new DatabaseOpenError(
      `data dir ${dataDir} is not empty and holds no PlanetLite database (it has ${shown}); give --data-dir an empty or new directory, or an existing registry's data dir`,
    );
  }
  await mkdir(dbDir, { recursive: true });
  return dbDir;
}

/** PGlite fails with Errors or with bare objects (ExitStatus); both become one readable phrase. */
function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  if (err && typeof err === 'object' && 'message' in err) return String((err as { message: unknown }).message);
  return String(err);
}

/** Distinct statement texts prepared by name; past this, statements run unnamed (SQL built per call
 * would otherwise grow every connection's set of prepared statements without end). */
const MAX_PREPARED = 1000;

/**
 * Gives each distinct parameterised statement a name, so that each connection parses and plans
 * it once and then only binds and runs it (about a third of PostgreSQL's work on the registry's
 * short statements). Statements without parameters stay on the simple protocol, which also
 * carries the migrations' multi-statement scripts.
 */
export class StatementNames {
  readonly #names = new Map<string, string>();
  readonly #max: number;

  constructor(max = MAX_PREPARED) {
    this.#max = max;
  }

  config(text: string, values: unknown[] | undefined, opts?: QueryOptions): pg.QueryConfig {
    if (!values?.length) return { text };
    if (opts?.planEachCall) return { text, values };
    let name = this.#names.get(text);
    if (name === undefined && this.#names.size < this.#max) {
      name = `pl_${this.#names.size}`;
      this.#names.set(text, name);
    }
    return name === undefined ? { text, values } : { name, text, values };
  }
}

async function openPostgres(url: string, max: number, prepare: boolean, logger?: Logger): Promise<Database> {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle client losing its server must not crash the process; the next query reconnects.
  pool.on('error', (err) => logger?.warn({ err }, 'postgres idle client error'));
  await pool.query('SELECT 1');
  const names = new StatementNames(prepare ? MAX_PREPARED : 0);
  return {
    kind: 'postgres',
    async query(sql, params, opts) {
      const res = await pool.query(names.config(sql, params, opts));
      return { rows: res.rows, rowCount: res.rowCount ?? 0 };
    },
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const tx: Queryable = {
          async query(sql, params, opts) {
            const res = await client.query(names.config(sql, params, opts));
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
    poolState: () => ({ connections: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
  };
}

async function openPglite(dbDir: string | undefined, durable: boolean): Promise<Database> {
  const { PGlite } = await import('@electric-sql/pglite');
  let db: InstanceType<typeof PGlite>;
  try {
    if (!dbDir) db = await PGlite.create();
    else if (durable) db = await PGlite.create({ fs: new (await import('./durable-fs.js')).DurableNodeFS(dbDir) });
    else db = await PGlite.create(dbDir);
  } catch (err) {
    throw new DatabaseOpenError(
      `the embedded database in ${dbDir ?? 'memory'} cannot be opened (${describe(err)}): it is damaged or not a PGlite database; restore it from a backup, or move it away to start with an empty one`,
    );
  }
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
