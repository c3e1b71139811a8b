// Versioned schema migrations: numbered SQL files applied once each, in order, in a transaction.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Database } from './database.js';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

const DIR = fileURLToPath(new URL('../migrations/', import.meta.url));

/** The migrations shipped with this package, read from packages/db/migrations/NNN_name.sql. */
export function migrations(): Migration[] {
  return readdirSync(DIR)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((f) => ({ version: Number(f.slice(0, 3)), name: f.slice(4, -4), sql: readFileSync(DIR + f, 'utf8') }));
}

/**
 * Applies every migration not yet recorded. Replicas starting together on one server take an
 * advisory lock so that only one of them migrates; the others wait and then find nothing to do.
 */
export async function migrate(db: Database, list: Migration[] = migrations()): Promise<Migration[]> {
  return db.transaction(async (tx) => {
    if (db.kind === 'postgres') await tx.query('SELECT pg_advisory_xact_lock(7421001)');
    await tx.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const done = new Set((await tx.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
    const applied: Migration[] = [];
    for (const m of list) {
      if (done.has(m.version)) continue;
      for (const stmt of splitStatements(m.sql)) await tx.query(stmt);
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
      applied.push(m);
    }
    return applied;
  });
}

// Statements end with ';' at a line's end, except inside a dollar-quoted function body ($$ … $$),
// whose own statements end that way too (the extended protocol that both drivers use takes one
// statement per query).
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let current: string[] = [];
  let quoted = false;
  for (const line of sql.split('\n')) {
    const text = line.replace(/^\s*--.*$/, '');
    current.push(text);
    if ((text.match(/\$\$/g) ?? []).length % 2 === 1) quoted = !quoted;
    if (!quoted && /;\s*$/.test(text)) {
      out.push(current.join('\n').replace(/;\s*$/, '').trim());
      current = [];
    }
  }
  out.push(current.join('\n').trim());
  return out.filter((s) => s.length > 0);
}
