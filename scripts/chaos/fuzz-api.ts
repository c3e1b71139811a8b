// The API fuzzer as a bounded run with figures: a registry on embedded PGlite (or on a throwaway
// PostgreSQL server with --postgres), the test world of two sites, and N seeded requests over every
// operation of /openapi.json. Exits non-zero when any answer was a 5xx, an error was not
// problem+json, or a refused write changed the database.
//
//   node scripts/chaos/fuzz-api.ts [--seed N] [--requests N] [--postgres] [--json]
//
// Needs the build (npm run build). A failing seed from the test suite reruns here as it ran there.
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { openDatabase } from '@planetlite/db';
import { memoryFanout } from '@planetlite/fanout';
import { buildApp, loadConfig } from '@planetlite/registry';
import { createTestDatabase, startPostgres, type PostgresServer } from '../../test/harness/services.ts';
import { ADMIN, makeWorld } from '../../apps/registry/test/world.ts';
import { databaseFingerprint, fuzzApi, summary } from './api-fuzz.ts';

const usage = 'usage: node scripts/chaos/fuzz-api.ts [--seed N] [--requests N] [--postgres] [--json]';
let args: { seed?: string; requests: string; postgres?: boolean; json?: boolean; help?: boolean };
try {
  args = parseArgs({
    options: {
      seed: { type: 'string' },
      requests: { type: 'string', default: '10000' },
      postgres: { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values as typeof args;
} catch (err) {
  console.error(`fuzz-api: ${err instanceof Error ? err.message : String(err)}\n${usage}`);
  process.exit(2);
}
if (args.help) {
  console.log(`${usage}\n\n  --seed N      the PRNG seed (default: a random one, printed)\n  --requests N  how many requests (default 10000)\n` +
    '  --postgres    run on a throwaway PostgreSQL server instead of embedded PGlite\n  --json        print the whole report as JSON');
  process.exit(0);
}
const seed = args.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(args.seed);
const requests = Number(args.requests);
if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) fail(`--seed must be an integer from 0 to ${2 ** 32 - 1}, not '${args.seed}'`);
if (!Number.isInteger(requests) || requests < 1) fail(`--requests must be a positive integer, not '${args.requests}'`);

function fail(line: string): never {
  console.error(`fuzz-api: ${line}`);
  process.exit(2);
}

let pg: PostgresServer | null = null;
const keyDir = mkdtempSync(join(tmpdir(), 'pl-fuzz-'));
try {
  if (args.postgres) pg = await startPostgres();
  const db = await openDatabase(pg ? { url: await createTestDatabase(pg.url, 'fuzz') } : {});
  const config = loadConfig(
    { listen: '127.0.0.1:0', plainHttp: true, adminEmail: ADMIN.email, adminPassword: ADMIN.password, logLevel: 'silent', sweeps: false, overrides: { loginRateLimitPerMinute: 100_000 } },
    {},
  );
  const app = await buildApp({ config, db, fanout: memoryFanout() });
  try {
    await app.listen({ host: '127.0.0.1', port: 0 });
    const w = await makeWorld(app);
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'fuzz@planetlite', '-f', join(keyDir, 'k')]);
    const world = {
      tokens: { admin: w.admin, pi: w.pi, user: w.user, node: w.node }, site: w.site, slice: w.slice, sliver: w.ids.sliver, node: w.ids.node, user: w.ids.user,
      sshKey: readFileSync(join(keyDir, 'k.pub'), 'utf8').trim(),
    };
    const baseUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    console.error(`fuzz-api: seed ${seed}, ${requests} requests on ${pg ? 'PostgreSQL' : 'PGlite'}`);
    const rep = await fuzzApi({ baseUrl, seed, requests, world, fingerprint: await databaseFingerprint(db) });
    if (args.json) console.log(JSON.stringify({ database: pg ? 'postgres' : 'pglite', ...rep }, null, 2));
    else {
      console.log(summary(rep));
      console.log(`answers by status: ${Object.entries(rep.statuses).map(([s, n]) => `${s}×${n}`).join(' ')}`);
      for (const f of rep.findings) console.log(`${f.kind} ${f.status} ${f.request}\n    ${f.detail}`);
    }
    process.exitCode = rep.serverErrors + rep.notProblem + rep.changedOnRefusal + rep.transportErrors > 0 ? 1 : 0;
  } finally {
    await app.close();
    await db.close();
  }
} finally {
  await pg?.stop();
  rmSync(keyDir, { recursive: true, force: true });
}
