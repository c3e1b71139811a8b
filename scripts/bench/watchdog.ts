// Memory watchdog reaction time: a sliver that keeps allocating (≈ 20 MiB/s) beside a quiet one,
// on one node whose agent runs the watchdog in budget mode. Each run measures, from outside, the
// time from the moment the slivers' memory crosses the reset level to the moment the hog's memory
// is freed; the watchdog's own figure (its sample → the kill done) comes from the event. Two
// series in the same run: the agent's 1 s sampling, and the same watchdog sampling every 30 s as
// pl_mom polled.
//
//   node scripts/bench/watchdog.ts [--runs 10] [--slow-runs 3] [--write docs/benchmarks.md]
//
// Needs root and the build (bash scripts/setup.sh). Everything lives in namespaces and temp dirs
// it makes, and is removed at the end.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import type { Event, Sliver } from '@planetlite/api';
import { startOneNode, until, type OneNode } from '../../test/harness/one-node.ts';
import { memoryCgroup, residentOf } from '../../test/harness/cgroup.ts';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '10' }, 'slow-runs': { type: 'string', default: '3' }, write: { type: 'string' } } });
const RUNS = Number(args.runs);
const SLOW_RUNS = Number(args['slow-runs']);
const MiB = 1024 * 1024;
const BUDGET_MB = 256;
const RESET = 70;
const RESET_BYTES = (BUDGET_MB * MiB * RESET) / 100;
const HOG = `awk 'BEGIN{s=sprintf("%1048576s",""); while(1){a[i++]=s; if (i%10==0) system("sleep 0.5")}}'`;

const watchdog = (intervalMs: number) => ({ watchdog: { budget_mb: BUDGET_MB, warn_percent: 40, reset_percent: RESET, cooldown_seconds: 1, interval_ms: intervalMs } });


interface Run {
  reactionMs: number;
  sampleToKillMs: number;
  peakMiB: number;
}

async function runOnce(node: OneNode, quiet: Sliver, hog: Sliver): Promise<Run> {
  const sh = (s: Sliver, cmd: string) => node.ssh(s.ports.first, 'root', cmd);
  await until('the hog to answer ssh', async () => {
    try {
      return sh(hog, 'id -u') === '0' ? true : null;
    } catch {
      return null;
    }
  }, 120_000);
  const dirs = [quiet, hog].map((s) => memoryCgroup(s.id));
  const since = (await node.admin.listEvents({})).at(-1)?.id ?? 0;
  sh(hog, `setsid ${HOG} </dev/null >/dev/null 2>&1 &`);
  let crossedAt: number | null = null;
  let freedAt: number | null = null;
  let peak = 0;
  const deadline = Date.now() + 120_000;
  while (freedAt === null) {
    if (Date.now() > deadline) throw new Error('the hog was not reset within 120 s');
    const now = Date.now();
    const mem = dirs.map(residentOf);
    const total = mem.reduce<number>((a, m) => a + (m ?? 0), 0);
    peak = Math.max(peak, total);
    if (crossedAt === null && total >= RESET_BYTES) crossedAt = now;
    if (crossedAt !== null && (mem[1] ?? 0) < 16 * MiB) freedAt = now;
    await new Promise((r) => setTimeout(r, 10));
  }
  const ev = await until('the watchdog.reset event', async () => {
    const evs = (await node.admin.listEvents({ type: 'watchdog.reset', after: since })) as Event[];
    return evs[0] ?? null;
  }, 60_000);
  return { reactionMs: freedAt - crossedAt!, sampleToKillMs: (ev.data as { reaction_ms: number }).reaction_ms, peakMiB: Math.round(peak / MiB) };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function series(node: OneNode, quiet: Sliver, hog: Sliver, runs: number, label: string): Promise<Run[]> {
  const out: Run[] = [];
  for (let i = 0; i < runs; i++) {
    const r = await runOnce(node, quiet, hog);
    out.push(r);
    process.stderr.write(`${label} run ${i + 1}/${runs}: crossed → freed ${r.reactionMs} ms (watchdog sample → kill ${r.sampleToKillMs} ms, peak ${r.peakMiB} MiB)\n`);
  }
  return out;
}

const node = await startOneNode({ site: 'wdb', octets: [250, 5], sliverSubnet: (o) => `10.${80 + (o % 5)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' }, agentSettings: watchdog(1000) });
try {
  const make = async (slice: string, memoryMb: number) => {
    await node.admin.createSlice({ name: slice, description: 'watchdog benchmark', url: 'https://example.org', image: 'tiny', resources: { memory_mb: memoryMb } });
    const created = await node.admin.createSliver(slice, node.nodeId);
    return until(`${slice} to run`, async () => {
      const s = await node.admin.getSliver(created.id);
      return s.state === 'running' ? s : null;
    }, 120_000);
  };
  const quiet = await make('wdb_quiet', 256);
  // Room to grow for 30 s at ≈ 20 MiB/s without meeting its own cgroup limit first.
  const hog = await make('wdb_hog', 4096);
  const fast = await series(node, quiet, hog, RUNS, '1 s sampling');
  await node.stopAgent();
  await node.startAgent(watchdog(30_000));
  const slow = await series(node, quiet, hog, SLOW_RUNS, '30 s sampling');

  const row = (name: string, rs: Run[]) =>
    `| ${name} | ${rs.length} | ${median(rs.map((r) => r.reactionMs))} | ${Math.max(...rs.map((r) => r.reactionMs))} | ${median(rs.map((r) => r.sampleToKillMs))} | ${Math.max(...rs.map((r) => r.peakMiB))} |`;
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  const kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  const text = [
    `## Memory watchdog reaction (\`node scripts/bench/watchdog.ts\`), ${new Date().toISOString().slice(0, 10)}`,
    '',
    `Machine: ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, kernel ${kernel}. One node, a quiet sliver and a`,
    `hog (busybox awk adding 1 MiB strings, ≈ 20 MiB/s) whose slice may use 4 GiB; the watchdog in budget`,
    `mode (${BUDGET_MB} MiB for the slivers, reset at ${RESET} %). "crossed → freed" is measured from outside every`,
    '10 ms: from the first moment the slivers\' resident memory is at the reset level to the first moment',
    'the hog\'s memory is gone. "sample → kill" is the watchdog\'s own figure from its event (the',
    'sample that saw the level → `lxc-stop -k` returned). The 30 s series is the same watchdog sampling',
    'every 30 s, as pl_mom polled.',
    '',
    '| sampling | runs | crossed → freed median (ms) | max (ms) | sample → kill median (ms) | peak (MiB) |',
    '|---|---:|---:|---:|---:|---:|',
    row('every 1 s (default)', fast),
    row('every 30 s (pl_mom)', slow),
    '',
  ].join('\n');
  process.stdout.write(text + '\n');
  if (args.write) {
    const before = existsSync(args.write) ? readFileSync(args.write, 'utf8') : '';
    writeFileSync(args.write, `${before.replace(/\n*$/, '\n\n')}${text}`);
  }
} finally {
  await node.close();
}
