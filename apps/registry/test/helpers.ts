// Test fixtures: a registry app on a fresh real database, and a small world of sites, users,
// a node and a slice to call it with.
import { inject } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '../../../test/harness/services.ts';
import type { FastifyInstance } from 'fastify';
import { openDatabase, type Database, type Queryable } from '@planetlite/db';
import { memoryFanout, type Fanout } from '@planetlite/fanout';
import { buildApp, loadConfig, type RegistryConfig } from '../src/index.js';
import { ADMIN } from './world.ts';

export * from './world.ts';

export const onPglite = process.env.PLANETLITE_TEST_DB === 'pglite';

/** A fresh, empty database: its own PostgreSQL database on the harness server, or in-memory PGlite. */
/** A Database that counts the statements sent through it (BEGIN and COMMIT too). */
export function countingDatabase(db: Database): Database & { statements: number } {
  const out = {
    kind: db.kind,
    statements: 0,
    query: ((sql: string, params?: unknown[]) => (out.statements++, db.query(sql, params))) as Queryable['query'],
    transaction: <T>(fn: (tx: Queryable) => Promise<T>) => {
      out.statements += 2;
      return db.transaction((tx) => fn({ query: ((sql: string, params?: unknown[]) => (out.statements++, tx.query(sql, params))) as Queryable['query'] }));
    },
    close: () => db.close(),
  };
  return out;
}

export async function freshDatabase(): Promise<Database> {
  if (onPglite) return openDatabase({});
  return openDatabase({ url: await createTestDatabase(inject('pgUrl'), 'registry') });
}

export interface TestApp {
  app: FastifyInstance;
  db: Database;
  close(): Promise<void>;
}

export async function testApp(opts: { db?: Database; fanout?: Fanout; config?: Partial<RegistryConfig> } = {}): Promise<TestApp> {
  const db = opts.db ?? (await freshDatabase());
  const config = loadConfig(
    // Plain HTTP on loopback: most tests call app.inject; tls.test.ts and the e2e suites cover HTTPS.
    { listen: '127.0.0.1:0', plainHttp: true, adminEmail: ADMIN.email, adminPassword: ADMIN.password, logLevel: 'silent', sweeps: false, overrides: { loginRateLimitPerMinute: 1000, ...opts.config } },
    {},
  );
  const app = await buildApp({ config, db, fanout: opts.fanout ?? memoryFanout() });
  await app.ready();
  return {
    app,
    db,
    async close() {
      await app.close();
      if (!opts.db) await db.close();
    },
  };
}

let keyDir: string | null = null;
/** A real ed25519 public key line made by ssh-keygen. */
export function sshPublicKey(comment = 'test@planetlite'): string {
  keyDir ??= mkdtempSync(join(tmpdir(), 'pl-keys-'));
  const file = join(keyDir, `k${Math.random().toString(36).slice(2)}`);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
  const line = readFileSync(`${file}.pub`, 'utf8').trim();
  return line;
}
export function cleanupKeys(): void {
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
  keyDir = null;
}

