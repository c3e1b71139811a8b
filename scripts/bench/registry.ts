// Registry throughput on loopback against a real PostgreSQL: slice creations, sliver reads and
// sliver actions per second (autocannon), over plain HTTP and over HTTPS (two replicas of one database, kept-alive
// connections as agents and the web page hold them), beside the raw INSERT rate of the same server
// (pgbench), in one run.
//
//   node scripts/bench/registry.ts [--seconds 10] [--connections 10] [--write docs/benchmarks.md]
//
// Runs with Node 24's built-in TypeScript support after `bash scripts/setup.sh` (needs the build).
import { execFileSync } from 'node:child_process';
import { cpus, totalmem, tmpdir } from 'node:os';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { PlanetLiteClient, trustRegistry } from '@planetlite/api';
import { startPostgres, startRedis } from '../../test/harness/services.ts';
import { startRegistryProcess, type RegistryProcess } from '../../test/harness/registry-process.ts';
import pgLib from 'pg';
import { appendResults } from './results.ts';
import { sampleWaits } from './pg-waits.ts';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '10' },
    write: { type: 'string' },
  },
});
const SECONDS = Number(args.seconds);
const CONNECTIONS = Number(args.connections);
/** Slivers the spread-out actions go to, one per slice on the one node. */
const ACTED_SLIVERS = 100;
/** New slivers made by the last load (the node's port window holds about 6,400). */
const NEW_SLIVERS = 5000;
const ADMIN = { email: 'bench@planetlite.test', password: 'bench-password' };

interface Result { name: string; rps: number; p50: number; p99: number; errors: number; total: number; waits?: string }

/** The registry's database, watched while a load runs (what its backends wait on). */
let watch: pgLib.Client | null = null;

async function cannon(name: string, opts: autocannon.Options): Promise<Result> {
  const sampler = watch ? sampleWaits(watch, 100) : null;
  const r = await autocannon({ connections: CONNECTIONS, duration: SECONDS, ...opts });
  const waits = await sampler?.stop();
  const errors = r.non2xx + r.errors + r.timeouts;
  return { name, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors, total: r.requests.total, ...(waits ? { waits } : {}) };
}

function pgbenchInsert(url: string): Result {
  const dir = mkdtempSync(join(tmpdir(), 'pl-pgbench-'));
  try {
    const script = join(dir, 'insert.sql');
    // The same shape of row a slice creation writes, into a table like slices.
    writeFileSync(script, "INSERT INTO raw_slices (name, site, description, url, kind, image, resources, expires_at) VALUES ('bench_' || gen_random_uuid(), 'bench', 'd', 'u', 'lxc', 'debian12', '{\"memory_mb\":512}', now() + interval '14 days');\n");
    const u = new URL(url);
    const pgbin = readdirMax('/usr/lib/postgresql');
    const env = { ...process.env, PGHOST: u.hostname, PGPORT: u.port, PGUSER: u.username || 'postgres', PGDATABASE: u.pathname.slice(1) };
    execFileSync(`${pgbin}/psql`, ['-q', '-c', 'CREATE TABLE raw_slices (name text PRIMARY KEY, site text, description text, url text, kind text, image text, resources jsonb, expires_at timestamptz, created_at timestamptz DEFAULT now())'], { env });
    const out = execFileSync(`${pgbin}/pgbench`, ['-n', '-c', String(CONNECTIONS), '-j', '2', '-T', String(SECONDS), '-r', '-f', script], { env, encoding: 'utf8' });
    const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1]);
    const lat = Number(/latency average = ([\d.]+) ms/.exec(out)?.[1]);
    const total = Number(/number of transactions actually processed: (\d+)/.exec(out)?.[1]);
    return { name: 'raw INSERT (pgbench, same server)', rps: tps, p50: lat, p99: NaN, errors: 0, total };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function readdirMax(base: string): string {
  const versions = execFileSync('ls', [base], { encoding: 'utf8' }).split('\n').filter((v) => /^\d+$/.test(v)).map(Number).sort((a, b) => b - a);
  return `${base}/${versions[0]}/bin`;
}

async function main(): Promise<void> {
  const pg = await startPostgres();
  const redis = await startRedis();
  let registry: RegistryProcess | undefined;
  let secure: RegistryProcess | undefined;
  const tlsDir = mkdtempSync(join(tmpdir(), 'pl-bench-tls-'));
  try {
    const dbUrl = await pg.createDatabase('bench');
    const env = { DATABASE_URL: dbUrl, REDIS_URL: redis.url, PLANETLITE_ADMIN_EMAIL: ADMIN.email, PLANETLITE_ADMIN_PASSWORD: ADMIN.password };
    registry = await startRegistryProcess(env);
    secure = await startRegistryProcess(env, { tlsDataDir: tlsDir });
    trustRegistry(secure.url, secure.ca!);
    const url = registry.url;
    const admin = new PlanetLiteClient({ registry: url });
    await admin.login(ADMIN.email, ADMIN.password);
    await admin.createSite({ login_base: 'bench', name: 'Bench', max_slices: 100000, max_slivers: 100000 });
    const tok = await admin.createEnrollmentToken('bench');
    const node = await new PlanetLiteClient({ registry: url }).enroll({
      token: tok.token, hostname: 'bench1.test', address: '127.0.0.1',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 2, memory_mb: 4096, disk_mb: 10000 },
      // Room for thousands of slivers (10 ports each) for the new-sliver load below.
      port_window: { first: 1024, last: 65535 },
    });
    await admin.createSlice({ name: 'bench_reader', description: 'd', url: 'u' });
    const sliver = await admin.createSliver('bench_reader', node.node_id);
    const headers = { authorization: `Bearer ${admin.token}`, 'content-type': 'application/json' };
    watch = new pgLib.Client({ connectionString: dbUrl });
    await watch.connect();

    let n = 0;
    const results: Result[] = [];
    for (const [mode, base] of [['HTTP', url], ['HTTPS', secure.url]] as const) {
      results.push(await cannon(`POST /v1/slices (create a slice), ${mode}`, {
        url: base,
        requests: [{
          method: 'POST', path: '/v1/slices', headers,
          setupRequest: (req) => ({ ...req, body: JSON.stringify({ name: `bench_s${n++}`, description: 'benchmark', url: 'https://example.org' }) }),
        }],
      }));
    }
    for (const [mode, base] of [['HTTP', url], ['HTTPS', secure.url]] as const) {
      results.push(await cannon(`GET /v1/slivers/{id}, ${mode}`, { url: `${base}/v1/slivers/${sliver.id}`, headers }));
    }
    // Actions: on one sliver, every request waits for the one before it to let go of the row (the
    // row's lock time is the bound); spread over many, what one action costs.
    const restart = JSON.stringify({ action: 'restart' });
    results.push(await cannon('POST /v1/slivers/{id}/actions, one sliver, HTTP', { url: `${url}/v1/slivers/${sliver.id}/actions`, method: 'POST', headers, body: restart }));
    const many: string[] = [];
    for (let i = 0; i < ACTED_SLIVERS; i++) {
      await admin.createSlice({ name: `bench_act${i}`, description: 'd', url: 'u' });
      many.push((await admin.createSliver(`bench_act${i}`, node.node_id)).id);
    }
    let next = 0;
    results.push(await cannon(`POST /v1/slivers/{id}/actions, ${ACTED_SLIVERS} slivers, HTTP`, {
      url,
      requests: [{ method: 'POST', headers, body: restart, setupRequest: (req) => ({ ...req, path: `/v1/slivers/${many[next++ % many.length]}/actions` }) }],
    }));
    // New slivers, one in each slice the creation load above made (a slice has one per node), as
    // many as there are such slices and ports on the node, at most NEW_SLIVERS.
    let slice = 0;
    // (The last few slices set up when a load's time ran out may not have been made.)
    const made = Math.min(n - 2 * CONNECTIONS, NEW_SLIVERS);
    results.push(await cannon(`POST /v1/slices/{name}/slivers (a new sliver), ${made} of them, HTTP`, {
      url,
      amount: made,
      requests: [{
        method: 'POST', headers, body: JSON.stringify({ node_id: node.node_id }),
        setupRequest: (req) => ({ ...req, path: `/v1/slices/bench_s${slice++}/slivers` }),
      }],
    }));
    results.push(pgbenchInsert(dbUrl));

    const cpu = cpus()[0]?.model ?? 'unknown cpu';
    const lines = [
      `### Registry throughput — ${new Date().toISOString().slice(0, 10)}`,
      '',
      `Machine: ${cpus().length} cores (${cpu}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, PostgreSQL ${/\(PostgreSQL\) (\S+)/.exec(execFileSync(`${readdirMax('/usr/lib/postgresql')}/postgres`, ['--version'], { encoding: 'utf8' }))?.[1] ?? '?'}, Redis fan-out on.`,
      `Load: ${CONNECTIONS} kept-alive connections for ${SECONDS} s each on loopback; each registry replica (plain HTTP, HTTPS with its own CA: ECDSA P-256) is one process, the load generator another, all on the same machine.`,
      '',
      '| what | requests/s | p50 ms | p99 ms | errors | total |',
      '|---|---:|---:|---:|---:|---:|',
      ...results.map((r) => `| ${r.name} | ${r.rps.toFixed(0)} | ${Number.isNaN(r.p50) ? '–' : r.p50.toFixed(1)} | ${Number.isNaN(r.p99) ? '–' : r.p99.toFixed(1)} | ${r.errors} | ${r.total} |`),
      '',
      '(pgbench reports the average latency, shown under p50.)',
      '',
      'What PostgreSQL\'s backends of the registry did meanwhile (pg_stat_activity every 100 ms: mean backends per state and wait; "CPU" is no wait):',
      '',
      ...results.filter((r) => r.waits).map((r) => `- ${r.name}: ${r.waits}`),
      '',
    ];
    const text = lines.join('\n');
    console.log(text);
    if (args.write) {
      appendResults(args.write, text);
      console.log(`appended to ${args.write}`);
    }
  } finally {
    await watch?.end().catch(() => undefined);
    await registry?.stop();
    await secure?.stop();
    rmSync(tlsDir, { recursive: true, force: true });
    await redis.stop();
    await pg.stop();
  }
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
