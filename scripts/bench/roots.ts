// Making and deleting a sliver's root against the number of roots in the pool, with no container
// and no agent: whether the storage driver's cost per root grows with the node, beside the bare
// btrfs commands it runs (subvolume create, qgroup limit, subvolume delete) timed by hand in the
// same pool at the same size.
//
//   node scripts/bench/roots.ts [--roots 2000] [--step 500] [--samples 5] [--write docs/benchmarks.md]
//
// Needs root, btrfs-progs and the build (`bash scripts/setup.sh`). Everything lives in one temp
// folder (a sparse loop-file pool) that is removed at the end, also on failure.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BtrfsDriver } from '@planetlite/storage';
import { run } from '@planetlite/host';
import { appendResults } from './results.ts';

const { values: args } = parseArgs({ options: { roots: { type: 'string', default: '2000' }, step: { type: 'string', default: '500' }, samples: { type: 'string', default: '5' }, write: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
if (args.help) {
  console.log('usage: node scripts/bench/roots.ts [--roots 2000] [--step 500] [--samples 5] [--write FILE.md]');
  process.exit(0);
}
const ROOTS = Number(args.roots);
const STEP = Number(args.step);
const SAMPLES = Number(args.samples);
for (const [name, v] of [['--roots', ROOTS], ['--step', STEP], ['--samples', SAMPLES]] as const) {
  if (!Number.isInteger(v) || v < 1) { console.error(`roots: ${name} must be a positive integer`); process.exit(2); }
}
const ROOT = new URL('../../', import.meta.url).pathname;
const QUOTA = 64 * 2 ** 20;
const log = (m: string) => console.error(`[roots ${new Date().toISOString().slice(11, 19)}] ${m}`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const timed = async (fn: () => Promise<unknown>) => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};

interface Row { size: number; create: number; remove: number; subvolCreate: number; qgroupLimit: number; subvolDelete: number; parts: string }

const dir = mkdtempSync(join(tmpdir(), 'pl-bench-roots-'));
const driver = new BtrfsDriver({ pool: join(dir, 'pool.img'), size: '32G', mountpoint: join(dir, 'pool') });
let exitCode = 0;
try {
  await driver.open();
  if (!driver.capabilities.layers) throw new Error('this host cannot make layered roots (see the agent\'s warning); nothing to measure');
  const image = join(dir, 'tiny.tar');
  execFileSync('bash', [join(ROOT, 'infra/images/tiny/build.sh'), image], { stdio: ['ignore', 'ignore', 'inherit'] });
  const sha = execFileSync('sha256sum', [image], { encoding: 'utf8' }).split(' ')[0]!;
  await driver.importImage(sha, image);
  const mp = driver.mountpoint;
  let made = 0;
  // Slot numbers for the roots' host ids, as the agent's ledger hands them out.
  const layered = () => ({ idmapBase: 1_000_000_000 + made * 65536 });
  const rows: Row[] = [];
  const sizes = [0, ...Array.from({ length: Math.floor(ROOTS / STEP) }, (_, i) => (i + 1) * STEP)];
  if (sizes.at(-1) !== ROOTS) sizes.push(ROOTS);
  for (const size of sizes) {
    const t0 = performance.now();
    while (made < size) {
      await driver.createRoot(randomUUID(), sha, QUOTA, { layered: layered() });
      made++;
    }
    if (size > 0) log(`${size} roots (${((performance.now() - t0) / 1000).toFixed(0)} s to fill)`);
    const parts: Record<string, number[]> = {};
    const row: Record<keyof Omit<Row, 'size' | 'parts'>, number[]> = { create: [], remove: [], subvolCreate: [], qgroupLimit: [], subvolDelete: [] };
    for (let i = 0; i < SAMPLES; i++) {
      const id = randomUUID();
      const took: Record<string, number> = {};
      row.create.push(await timed(() => driver.createRoot(id, sha, QUOTA, { layered: layered(), took })));
      for (const [part, ms] of Object.entries(took)) (parts[part] ??= []).push(ms);
      row.remove.push(await timed(() => driver.deleteRoot(id)));
      // The floor: what btrfs itself takes for the same subvolume work at this size.
      const bare = join(mp, `bare-${i}`);
      row.subvolCreate.push(await timed(() => run('btrfs', ['-q', 'subvolume', 'create', bare])));
      row.qgroupLimit.push(await timed(() => run('btrfs', ['qgroup', 'limit', '-e', String(QUOTA), bare])));
      row.subvolDelete.push(await timed(() => run('btrfs', ['-q', 'subvolume', 'delete', bare])));
    }
    const r: Row = { size, create: median(row.create), remove: median(row.remove), subvolCreate: median(row.subvolCreate), qgroupLimit: median(row.qgroupLimit), subvolDelete: median(row.subvolDelete), parts: Object.entries(parts).map(([p, ms]) => `${p} ${median(ms)}`).join(', ') };
    rows.push(r);
    log(`at ${size}: createRoot ${r.create.toFixed(0)} ms, deleteRoot ${r.remove.toFixed(0)} ms; bare: subvolume create ${r.subvolCreate.toFixed(0)}, qgroup limit ${r.qgroupLimit.toFixed(0)}, subvolume delete ${r.subvolDelete.toFixed(0)} ms; createRoot's parts: ${r.parts}`);
  }
  const table = [
    `Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; a 32 GiB sparse loop-file btrfs pool with quotas, layered roots of the tiny image (an overlay over the idmapped image, the upper layer in a subvolume with a 64 MiB exclusive limit), no container. Medians of ${SAMPLES} at each size, in ms.`,
    '',
    '| roots in the pool | createRoot | its parts (medians) | deleteRoot | bare `subvolume create` | bare `qgroup limit` | bare `subvolume delete` |',
    '|---:|---:|---|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.size} | ${r.create.toFixed(0)} | ${r.parts} | ${r.remove.toFixed(0)} | ${r.subvolCreate.toFixed(0)} | ${r.qgroupLimit.toFixed(0)} | ${r.subvolDelete.toFixed(0)} |`),
  ].join('\n');
  console.log(table);
  if (args.write) appendResults(args.write, `### Making and deleting a root against pool size (\`node scripts/bench/roots.ts --roots ${ROOTS} --step ${STEP}\`), ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC\n\n${table}`);
} catch (err) {
  console.error(`roots: ${(err as Error).stack ?? String(err)}`);
  exitCode = 1;
} finally {
  await driver.destroy().catch((err: unknown) => console.error(`roots: removing the pool: ${(err as Error).message}`));
  rmSync(dir, { recursive: true, force: true });
}
process.exit(exitCode);
