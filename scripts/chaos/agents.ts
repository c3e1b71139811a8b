// The agents' fault campaign, bounded: agents SIGKILLed at random moments during continuous
// create / change / restart / reset / stop / start / delete churn on a three-node testbed, then
// every sliver must reach its desired state (live limits included), and once everything is
// deleted no node may keep a container, link, nftables chain, tc qdisc or ifb device, subvolume,
// qgroup, cgroup, mount, loop device, ledger record or VM process (test/harness/leaks.ts).
//
//   node scripts/chaos/agents.ts [--kills 100] [--slices 4] [--seed N] [--json]
//
// Needs root and the build (bash scripts/setup.sh). Uses 198.18.50-59 and 10.180-189.n.0/24;
// everything it makes (namespaces, pools, containers) is removed at the end. Exits 1 when a
// sliver did not converge or anything leaked.
import { parseArgs } from 'node:util';
import { runAgentChaos } from '../../test/harness/agent-chaos.ts';

const usage = 'usage: node scripts/chaos/agents.ts [--kills N] [--slices N] [--seed N] [--json]';
let args: { kills: string; slices: string; seed?: string; json?: boolean; help?: boolean };
try {
  args = parseArgs({ options: { kills: { type: 'string', default: '100' }, slices: { type: 'string', default: '4' }, seed: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }).values as typeof args;
} catch (err) {
  process.stderr.write(`chaos/agents: ${err instanceof Error ? err.message : String(err)}\n${usage}\n`);
  process.exit(2);
}
if (args.help) {
  process.stdout.write(`${usage}\n  --kills N   SIGKILLs of agents in all (default 100)\n  --slices N  slices churned, each with up to one sliver per node (default 4)\n  --seed N    seed of the random choices (printed by every run)\n  --json      the figures as JSON\n`);
  process.exit(0);
}
const num = (name: string, v: string | undefined, min: number): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) {
    process.stderr.write(`chaos/agents: --${name} must be an integer of at least ${min}, not ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return n;
};
if (process.getuid?.() !== 0) {
  process.stderr.write('chaos/agents: run as root (it makes network namespaces, loop devices and containers)\n');
  process.exit(2);
}
const seed = num('seed', args.seed, 0);
const f = await runAgentChaos({
  kills: num('kills', args.kills, 1)!,
  slices: num('slices', args.slices, 1)!,
  ...(seed !== undefined ? { seed } : {}),
  say: (line) => process.stderr.write(`${line}\n`),
});
if (args.json) process.stdout.write(JSON.stringify(f, null, 2) + '\n');
else {
  const leaks = Object.entries(f.leaks).map(([k, n]) => `${k} ${n}`).join(', ');
  process.stdout.write(
    [
      `seed ${f.seed}`,
      `kills: ${f.kills} (${f.groupKills} with the agent's running commands)`,
      `churn: ${Object.entries(f.operations).map(([k, n]) => `${k} ${n}`).join(', ')} in ${f.seconds.churn.toFixed(0)} s; ${f.created} slivers created`,
      `slivers converged: ${f.converged}/${f.slivers} (in ${f.seconds.converge.toFixed(0)} s)`,
      ...f.notConverged.map((l) => `  not converged: ${l}`),
      `leak check before deleting (it sees what is there): ${Object.entries(f.before).map(([k, n]) => `${k} ${n}`).join(', ')}`,
      `leaks after deleting everything: ${leaks} (total ${f.leakLines.length}, checked after ${f.seconds.cleanup.toFixed(0)} s)`,
      ...f.leakLines.map((l) => `  leak: ${l}`),
    ].join('\n') + '\n',
  );
}
process.exit(f.converged === f.slivers && f.leakLines.length === 0 ? 0 : 1);
