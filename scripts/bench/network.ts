// What one sliver's network change costs on an empty node and on a node that already holds
// N slivers (issue 15, "cost per change"): host commands and time for each step the agent takes
// when it creates a sliver (attach, rate caps, table apply) and deletes one (detach, table apply),
// and the table listing a whole pass compares (once a minute, not part of a change), through the nftables driver, in one network namespace. Beside
// it, the floor for the table: one `nft -f` of the same entries scripted by hand, and what
// rewriting the whole table costs at that size (what every change cost before the table held
// slivers as map entries).
//
//   node scripts/bench/network.ts [--slivers 2000] [--changes 20] [--write docs/benchmarks.md]
//
// Needs root and the build. The namespace (pl-bench-netcost) and everything in it are removed at
// the end, also on failure; nothing outside it is touched.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { commandCount } from '@planetlite/host';
import { appendResults } from './results.ts';
import { deviceNames, NftablesDriver, renderChanges, renderRuleset, parseSubnet, type SliverNetSpec } from '@planetlite/network';

const { values: args } = parseArgs({ options: { slivers: { type: 'string', default: '2000' }, changes: { type: 'string', default: '20' }, write: { type: 'string' } } });
const N = Number(args.slivers);
const CHANGES = Number(args.changes);
const NS = 'pl-bench-netcost';
const PUBLIC = '198.18.253.1';
const SUBNET = '10.64.0.0/12';
const config = { table: 'planetlite', publicAddress: PUBLIC, subnet: parseSubnet(SUBNET) };

const sh = (cmd: string, argv: string[], input?: string) => execFileSync(cmd, argv, { input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], maxBuffer: 1 << 30 }).toString();
const spec = (slot: number): SliverNetSpec => ({ id: randomUUID(), slot, ports: { first: 1024 + slot * 10, last: 1033 + slot * 10 }, kind: 'veth' });

interface Cost { ms: number; commands: number }
async function cost(fn: () => Promise<unknown>): Promise<Cost> {
  const c0 = commandCount();
  const t0 = performance.now();
  await fn();
  return { ms: performance.now() - t0, commands: commandCount() - c0 };
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** N slivers' devices made by hand in batches (as attach() names them), then the table applied whole. */
async function fill(driver: NftablesDriver, n: number): Promise<SliverNetSpec[]> {
  const specs = Array.from({ length: n }, (_, i) => spec(i + 100));
  for (let i = 0; i < specs.length; i += 500) {
    const lines = specs.slice(i, i + 500).flatMap((s) => {
      const { hostIf, peerIf } = deviceNames(s.id);
      const a = driver.address(s);
      return [`link add ${hostIf} type veth peer name ${peerIf}`, `link set dev ${hostIf} alias planetlite-sliver:${s.id}`, `addr add ${a.hostAddress}/${a.prefix} dev ${hostIf}`, `link set dev ${hostIf} up`];
    });
    sh('ip', ['-n', NS, '-batch', '-'], lines.join('\n') + '\n');
  }
  await driver.apply(specs, { whole: true });
  return specs;
}

const LISTING = 'table listing (a whole pass, not a change)';

/** One sliver created and deleted, CHANGES times, step by step as the agent's builder does it. */
async function changes(driver: NftablesDriver, base: SliverNetSpec[]): Promise<Record<string, Cost>> {
  const steps: Record<string, Cost[]> = { attach: [], 'rate caps': [], 'table apply (add)': [], detach: [], 'table apply (delete)': [], [LISTING]: [] };
  for (let i = 0; i < CHANGES; i++) {
    const s = spec(i % 2 ? 1 : 2);
    steps.attach!.push(await cost(() => driver.attach(s)));
    steps['rate caps']!.push(await cost(() => driver.limit(s.id, { inKbps: 10_000, outKbps: 10_000 })));
    steps['table apply (add)']!.push(await cost(() => driver.apply([...base, s])));
    steps[LISTING]!.push(await cost(() => driver.tableState()));
    steps.detach!.push(await cost(() => driver.detach(s.id)));
    steps['table apply (delete)']!.push(await cost(() => driver.apply(base)));
  }
  return Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, { ms: median(v.map((c) => c.ms)), commands: median(v.map((c) => c.commands)) }]));
}

/** The floor for a table change: the same entries added and deleted with one hand-written `nft -f` each. */
function floor(base: SliverNetSpec[]): number {
  const times: number[] = [];
  for (let i = 0; i < CHANGES; i++) {
    const s = spec(2);
    const add = renderChanges(config, base, [...base, s]);
    const del = renderChanges(config, [...base, s], base);
    const t0 = performance.now();
    sh('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], add);
    times.push(performance.now() - t0);
    sh('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], del);
  }
  return median(times);
}

/** What rewriting the whole table costs at this size (every change before, and the repair now). */
function wholeTable(base: SliverNetSpec[]): number {
  const text = renderRuleset(config, base);
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    sh('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], text);
    times.push(performance.now() - t0);
  }
  return median(times);
}

async function main(): Promise<void> {
  sh('ip', ['netns', 'add', NS]);
  try {
    sh('ip', ['-n', NS, 'link', 'add', 'uplink', 'type', 'veth', 'peer', 'name', 'uplink-peer']);
    sh('ip', ['-n', NS, 'addr', 'add', `${PUBLIC}/24`, 'dev', 'uplink']);
    sh('ip', ['-n', NS, 'link', 'set', 'uplink', 'up']);
    const driver = new NftablesDriver({ publicAddress: PUBLIC, sliverSubnet: SUBNET, netns: NS });
    await driver.check();
    const rows: Array<{ n: number; steps: Record<string, Cost>; floor: number; whole: number }> = [];
    for (const n of [0, N]) {
      await driver.teardown();
      const t0 = performance.now();
      const base = await fill(driver, n);
      console.error(`bench: ${n} slivers' devices and table in ${Math.round(performance.now() - t0)} ms; ${CHANGES} changes…`);
      rows.push({ n, steps: await changes(driver, base), floor: floor(base), whole: wholeTable(base) });
    }
    const [empty, full] = rows as [(typeof rows)[0], (typeof rows)[0]];
    const ofChange = (r: (typeof rows)[0]) => Object.entries(r.steps).filter(([k]) => k !== LISTING).map(([, c]) => c);
    const total = (r: (typeof rows)[0]) => ofChange(r).reduce((a, c) => a + c.ms, 0);
    const commands = (r: (typeof rows)[0]) => ofChange(r).reduce((a, c) => a + c.commands, 0);
    const text = [
      `### Cost of one sliver's network change against node size — ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
      '',
      `\`node scripts/bench/network.ts --slivers ${N} --changes ${CHANGES}\`. Machine: ${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${Math.round(totalmem() / 2 ** 30)} GiB, load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} at the end. The nftables driver in one network namespace; the other slivers are veth pairs with their table entries (no containers). Medians of ${CHANGES} creations and deletions of one sliver.`,
      '',
      `| step | empty node: commands | ms | ${N} slivers: commands | ms | ratio |`,
      '|---|---:|---:|---:|---:|---:|',
      ...Object.keys(empty.steps).map((k) => `| ${k} | ${empty.steps[k]!.commands} | ${empty.steps[k]!.ms.toFixed(1)} | ${full.steps[k]!.commands} | ${full.steps[k]!.ms.toFixed(1)} | ${(full.steps[k]!.ms / empty.steps[k]!.ms).toFixed(2)}× |`),
      `| a change's steps (all but the listing) | ${commands(empty)} | ${total(empty).toFixed(1)} | ${commands(full)} | ${total(full).toFixed(1)} | ${(total(full) / total(empty)).toFixed(2)}× |`,
      `| floor: the table entries added by hand (one \`nft -f\`) | 1 | ${empty.floor.toFixed(1)} | 1 | ${full.floor.toFixed(1)} | ${(full.floor / empty.floor).toFixed(2)}× |`,
      `| the whole table rewritten (every change, before) | 1 | ${empty.whole.toFixed(1)} | 1 | ${full.whole.toFixed(1)} | ${(full.whole / empty.whole).toFixed(2)}× |`,
      '',
    ].join('\n');
    console.log(text);
    if (args.write) appendResults(args.write, text);
  } finally {
    // Deleting the namespace takes its devices and table with it.
    sh('ip', ['netns', 'del', NS]);
  }
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
