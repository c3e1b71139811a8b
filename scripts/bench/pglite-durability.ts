// What durable commits cost on the embedded database: sequential one-row commits per second on
// PGlite as it comes (no flush reaches the disk) and with the registry's durable file layer (one
// fdatasync of the WAL per commit), beside a PostgreSQL server with fsync on, in one run.
//
//   node scripts/bench/pglite-durability.ts [--commits 300] [--rounds 3]
//
// Runs with Node 24's TypeScript support after `npm run build`.
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openDatabase, type Database } from '@planetlite/db';
import { startPostgres } from '../../test/harness/services.ts';

const { values: args } = parseArgs({ options: { commits: { type: 'string', default: '300' }, rounds: { type: 'string', default: '3' }, help: { type: 'boolean', default: false } } });
if (args.help) {
  console.log('usage: node scripts/bench/pglite-durability.ts [--commits N] [--rounds N]\n\nSequential one-row commits per second: PGlite as it comes, PGlite durable (the registry default),\nPostgreSQL with fsync on; median of the rounds. Needs the build and Debian\'s postgresql.');
  process.exit(0);
}
const COMMITS = Number(args.commits);
const ROUNDS = Number(args.rounds);
if (!(COMMITS > 0 && ROUNDS > 0)) {
  console.error('bench/pglite-durability: --commits and --rounds take positive numbers');
  process.exit(2);
}

/** Commits per second of COMMITS single-row INSERTs, one after another (as one client's writes). */
async function commitsPerSecond(db: Database): Promise<number> {
  await db.query('CREATE TABLE IF NOT EXISTS bench_commits (id bigserial PRIMARY KEY, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now())');
  const t0 = performance.now();
  for (let i = 0; i < COMMITS; i++) await db.query('INSERT INTO bench_commits (payload) VALUES ($1)', [`row ${i}`]);
  return COMMITS / ((performance.now() - t0) / 1000);
}

async function pglite(durable: boolean): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'pl-bench-pglite-'));
  try {
    const db = await openDatabase({ dataDir: dir, durable });
    try {
      await commitsPerSecond(db); // warm: first inserts extend files
      return await commitsPerSecond(db);
    } finally {
      await db.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const pg = await startPostgres({ durable: true });
  try {
    const rows: Record<string, number[]> = { 'PGlite as it comes (no flush)': [], 'PGlite, durable (registry default)': [], 'PostgreSQL 15, fsync on': [] };
    for (let r = 0; r < ROUNDS; r++) {
      rows['PGlite as it comes (no flush)']!.push(await pglite(false));
      rows['PGlite, durable (registry default)']!.push(await pglite(true));
      const db = await openDatabase({ url: await pg.createDatabase('bench_durable') });
      try {
        rows['PostgreSQL 15, fsync on']!.push(await commitsPerSecond(db));
      } finally {
        await db.close();
      }
    }
    console.log(`${COMMITS} sequential one-row commits, median of ${ROUNDS} rounds (${cpus().length} cores, ${new Date().toISOString().slice(0, 10)}):`);
    for (const [name, xs] of Object.entries(rows)) console.log(`  ${name.padEnd(36)} ${Math.round(median(xs))} commits/s  (rounds: ${xs.map(Math.round).join(', ')})`);
  } finally {
    await pg.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench/pglite-durability: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
