// What one desired-state document costs the agent's event loop before any host command, against
// the node's size: JSON.parse of the document as the registry sends it, the screen (schema and
// node rules, screen.ts) and the pass plan (planner.ts) for a node whose slivers are all settled
// (a change of one sliver on a full node). Pure CPU, no host: the median of R documents each.
//
//   node scripts/bench/doc-path.ts [--sizes 1,500,1000,2000] [--rounds 15]
//
// Needs the build (bash scripts/setup.sh).
import { parseArgs } from 'node:util';
import { cpus } from 'node:os';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import { screenDesiredState } from '../../apps/agent/dist/screen.js';
import { carryDocKeys, docKey, planPass, type HostView } from '../../apps/agent/dist/planner.js';
import type { SliverRecord } from '../../apps/agent/dist/ledger.js';

const { values: args } = parseArgs({ options: { sizes: { type: 'string', default: '1,500,1000,2000' }, rounds: { type: 'string', default: '15' } } });
const SIZES = args.sizes.split(',').map(Number);
const ROUNDS = Number(args.rounds);

// Two member keys per slice, as a small lab's slice has.
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx8c3l1bWVtYmVyQGxhYnRlc3RrZXl0ZXN0a2V5dGVzdA member@lab';

function node(n: number): DesiredState {
  const slivers: DesiredSliver[] = Array.from({ length: n }, (_, i) => ({
    id: `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`, slice: `lab_exp${i}`, kind: 'lxc', desired: 'running', restart_seq: 0, reset_seq: 0, thaw_seq: 0,
    image: { name: 'tiny', sha256: 'a'.repeat(64), magnet: `magnet:?xt=urn:btih:${'b'.repeat(40)}`, web_seed: 'https://registry.example.org:8443/v1/images/tiny/blob' },
    resources: { memory_mb: 64, cpu_shares: 1024, disk_mb: 64, net_kbps: 1000 }, memory_reset: 'restart',
    ports: { first: 20000 + i * 10, last: 20000 + i * 10 + 9 }, expires_at: '2030-01-01T00:00:00.000Z', keys: [KEY, KEY.replace('member', 'other')],
  }));
  return { node_id: '00000000-0000-4000-8000-0000000000ff', address: '192.0.2.1', port_window: { first: 20000, last: 65535 }, slivers };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

console.log(`Machine: ${cpus().length} cores (${cpus()[0]?.model.trim()}), Node ${process.version}; ${ROUNDS} documents per size, medians in ms.\n`);
console.log('| slivers | document bytes | JSON.parse | screen | plan, every part digested | plan, keys carried over (the agent) | all (the agent) |');
console.log('|---:|---:|---:|---:|---:|---:|---:|');
for (const n of SIZES) {
  const text = JSON.stringify(node(n));
  // The node as the last pass left it: every sliver built, running and carried out in full.
  const settled = JSON.parse(text) as DesiredState;
  const done = new Map(settled.slivers.map((s) => [s.id, docKey(s)]));
  const ledger = settled.slivers.map((s, i) => ({ id: s.id, slice: s.slice, slot: i, idmap_base: 1_000_000 + i * 65536, image_sha256: 'a'.repeat(64), restart_seq: 0, reset_seq: 0, keys_hash: null }) as SliverRecord);
  const host: HostView = { instances: new Map(settled.slivers.map((s) => [s.id, { kind: 'lxc' as const, state: null }])), roots: settled.slivers.map((s) => s.id), links: [] };
  const parse: number[] = [];
  const screen: number[] = [];
  const plan: number[] = [];
  const carried: number[] = [];
  // The agent carries each unchanged part's key over from the document before (carryDocKeys).
  let prev = settled;
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    const doc = JSON.parse(text) as DesiredState;
    const t1 = performance.now();
    const { accepted, refused } = screenDesiredState(doc, { memoryMb: 1 << 20, cpuPercent: 6400 });
    const t2 = performance.now();
    const p = planPass({ ...doc, slivers: accepted }, host, ledger, done);
    const t3 = performance.now();
    // The same again on a document of its own (its keys not yet digested), with the keys carried.
    const next = { ...doc, slivers: screenDesiredState(JSON.parse(text) as DesiredState, { memoryMb: 1 << 20, cpuPercent: 6400 }).accepted };
    const t4 = performance.now();
    carryDocKeys(prev, next);
    const q = planPass(next, host, ledger, done);
    const t5 = performance.now();
    prev = next;
    if (refused.size || p.ensure.length || p.teardown.length || q.ensure.length) throw new Error(`doc-path: the node is not settled (${refused.size} refused, ${p.ensure.length} to ensure, ${p.teardown.length} to tear down)`);
    parse.push(t1 - t0);
    screen.push(t2 - t1);
    plan.push(t3 - t2);
    carried.push(t5 - t4);
  }
  const all = parse.map((x, i) => x + screen[i]! + carried[i]!);
  const f = (xs: number[]) => median(xs).toFixed(1);
  console.log(`| ${n} | ${text.length.toLocaleString('en')} | ${f(parse)} | ${f(screen)} | ${f(plan)} | ${f(carried)} | ${f(all)} |`);
}
