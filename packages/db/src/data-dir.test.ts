// The embedded database's folder under the data dir: moved there from the old layout, and one clear
// line when the data dir is someone else's or the database cannot be opened.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PGlite } from '@electric-sql/pglite';
import { DatabaseOpenError, openDatabase } from './database.js';
import { repoRoot } from '../../../test/vitest.config.js';

const run = promisify(execFile);
const BIN = resolve(repoRoot, 'apps/registry/bin/planetlite-registry.js');

/** Runs `planetlite-registry migrate` on the embedded database (no DATABASE_URL from the harness). */
async function migrateCli(dataDir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env };
  for (const k of ['DATABASE_URL', 'REDIS_URL', 'PLANETLITE_DATA_DIR']) delete env[k];
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, 'migrate', '--data-dir', dataDir], { env, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('registry data dir', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'planetlite-datadir-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps the database in <data-dir>/db, beside the images', async () => {
    const db = await openDatabase({ dataDir: dir });
    await db.query('CREATE TABLE t (x int)');
    await db.close();
    await mkdir(join(dir, 'images'));
    expect((await readdir(dir)).sort()).toEqual(['db', 'images']);
    expect(existsSync(join(dir, 'db', 'PG_VERSION'))).toBe(true);
    const again = await openDatabase({ dataDir: dir });
    expect((await again.query("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name = 't'")).rows).toEqual([{ n: 1 }]);
    await again.close();
  });

  it('moves a database kept at the top of an existing data dir into db/, keeping its rows and the images', async () => {
    const old = await PGlite.create(dir);
    await old.query('CREATE TABLE kept (x int)');
    await old.query('INSERT INTO kept VALUES (42)');
    await old.close();
    await mkdir(join(dir, 'images'));
    await writeFile(join(dir, 'images', 'abc'), 'archive');

    const db = await openDatabase({ dataDir: dir });
    expect((await db.query('SELECT x FROM kept')).rows).toEqual([{ x: 42 }]);
    await db.close();
    expect((await readdir(dir)).sort()).toEqual(['db', 'images']);
    expect(await readFile(join(dir, 'images', 'abc'), 'utf8')).toBe('archive');

    // And the CLI finds it there afterwards.
    const out = await migrateCli(dir);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
  });

  it('starts on a new data dir that holds only the registry\'s own files (images, TLS)', async () => {
    await mkdir(join(dir, 'images'));
    await writeFile(join(dir, 'ca.pem'), 'cert');
    const db = await openDatabase({ dataDir: dir });
    await db.close();
    expect((await readdir(dir)).sort()).toEqual(['ca.pem', 'db', 'images']);
  });

  it('refuses a data dir that holds other things and no database, in one line, writing nothing', async () => {
    await writeFile(join(dir, 'notes.txt'), 'mine');
    await expect(openDatabase({ dataDir: dir })).rejects.toThrow(DatabaseOpenError);
    await expect(openDatabase({ dataDir: dir })).rejects.toThrow(`data dir ${dir} is not empty and holds no PlanetLite database (it has notes.txt)`);
    expect(await readdir(dir)).toEqual(['notes.txt']);

    const out = await migrateCli(dir);
    expect(out.code).toBe(1);
    expect(out.stderr.trim().split('\n')).toHaveLength(1);
    expect(out.stderr).toMatch(/^planetlite-registry: data dir .* is not empty and holds no PlanetLite database/);
  });

  it('says in one line when the database is there but cannot be opened (never [object Object])', async () => {
    await mkdir(join(dir, 'db', 'base'), { recursive: true });
    await writeFile(join(dir, 'db', 'notes.txt'), 'not a database');
    const out = await migrateCli(dir);
    expect(out.code).toBe(1);
    expect(out.stderr).not.toContain('[object Object]');
    expect(out.stderr.trim().split('\n')).toHaveLength(1);
    expect(out.stderr).toContain(`planetlite-registry: the embedded database in ${join(dir, 'db')} cannot be opened`);

    await writeFile(join(dir, 'db', 'PG_VERSION'), 'garbage\n');
    await expect(openDatabase({ dataDir: dir })).rejects.toThrow(/cannot be opened \(.+\): it is damaged or not a PGlite database/);
  });
});
