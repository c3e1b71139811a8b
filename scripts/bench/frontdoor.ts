// The ssh front door (issue 17) against the sliver's forwarded port, in the same run, from the
// experimenter's namespace with OpenSSH: connection set-up to a finished command (`ssh … true`:
// TCP, key exchange, public-key login, a session, exit status), and scp throughput of a large
// file both ways, with the front door process's CPU time per MiB relayed.
//
//   node scripts/bench/frontdoor.ts [--runs 20] [--mib 64] [--net-kbps 1000000] [--write docs/benchmarks.md]
//
// --net-kbps raises the slice's rate cap first (the default cap, 10 Mbit/s, would measure the cap,
// not the relay); the run waits until the sliver's tc class carries it.
//
// One node as test/e2e/frontdoor.test.ts makes it (site fdoor, 198.18.30-39.0/24, sliver subnets
// 10.160-169.0.0/24; the e2e and this benchmark never run at the same time). Needs root and the
// build. Everything is removed at the end, also on failure.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { deviceNames } from '@planetlite/network';
import { startOneNode } from '../../test/harness/one-node.ts';
import { appendResults } from './results.ts';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '20' }, mib: { type: 'string', default: '64' }, 'net-kbps': { type: 'string', default: '1000000' }, write: { type: 'string' } } });
const RUNS = Number(args.runs);
const MIB = Number(args.mib);
const NET_KBPS = Number(args['net-kbps']);
const SLICE = 'fdoor_bench';

const loadAtStart = loadavg().map((l) => l.toFixed(2)).join(' ');
const node = await startOneNode({ site: 'fdoor', octets: [30, 10], sliverSubnet: (o) => `10.${160 + (o % 10)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
try {
  const sliver = await node.runningSliver(SLICE);
  await node.admin.updateSlice(SLICE, { resources: { net_kbps: NET_KBPS } });
  const rateOf = () => new Promise<string>((resolve) => execFile('tc', ['-n', node.ns, 'class', 'show', 'dev', deviceNames(sliver.id).hostIf], (_e, out) => resolve(String(out))));
  const want = `rate ${NET_KBPS >= 1_000_000 ? `${NET_KBPS / 1_000_000}Gbit` : `${NET_KBPS / 1000}Mbit`}`;
  for (let i = 0; !(await rateOf()).includes(want); i++) {
    if (i === 60) throw new Error(`the sliver's tc class never showed '${want}': ${await rateOf()}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const config = join(node.dir, 'ssh_config');
  writeFileSync(config, ['Host *', `  IdentityFile ${node.key}`, '  IdentitiesOnly yes', '  StrictHostKeyChecking no', '  UserKnownHostsFile /dev/null', '  BatchMode yes', '  LogLevel ERROR', ''].join('\n'));
  const inNet = (tool: string, a: string[]) =>
    new Promise<void>((resolve, reject) => execFile('ip', ['netns', 'exec', node.net, tool, '-F', config, ...a], { timeout: 600_000 }, (err) => (err ? reject(err) : resolve())));
  const timed = async (f: () => Promise<void>) => {
    const t = performance.now();
    await f();
    return performance.now() - t;
  };
  const paths = { 'front door (port 22)': ['-p', '22'], [`forwarded port (${sliver.ports.first})`]: ['-p', String(sliver.ports.first)] };
  const dest = `${SLICE}@${node.publicAddress}`;
  // Warm both (the front door learns the sliver when the pass that built it ends).
  for (let i = 0; i < 30; i++) if (await inNet('ssh', ['-p', '22', dest, 'true']).then(() => true, () => false)) break; else await new Promise((r) => setTimeout(r, 1000));

  const setup: Record<string, number[]> = {};
  for (let i = 0; i < RUNS; i++) {
    for (const [name, port] of Object.entries(paths)) (setup[name] ??= []).push(await timed(() => inNet('ssh', [...port, dest, 'true'])));
  }
  const file = join(node.dir, 'big.bin');
  await new Promise<void>((resolve, reject) => execFile('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${MIB}`], (e) => (e ? reject(e) : resolve())));
  const scp: Record<string, { up: number[]; down: number[] }> = {};
  // The front door's own CPU time per MiB it relays (user + system, from /proc): a figure the
  // machine's other load does not change much, unlike the throughputs.
  const doorPid = node.agent!.frontDoor!.pid!;
  const cpuMs = () => {
    const f = readFileSync(`/proc/${doorPid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // clock ticks of USER_HZ, 100 on Linux
  };
  const doorCpu = { up: 0, down: 0 };
  for (let i = 0; i < 2; i++) {
    for (const [name, port] of Object.entries(paths)) {
      const P = port[1]!;
      const s = (scp[name] ??= { up: [], down: [] });
      const c0 = cpuMs();
      s.up.push(MIB / ((await timed(() => inNet('scp', ['-P', P, file, `${dest}:/tmp/big.bin`]))) / 1000));
      const c1 = cpuMs();
      s.down.push(MIB / ((await timed(() => inNet('scp', ['-P', P, `${dest}:/tmp/big.bin`, join(node.dir, 'back.bin')]))) / 1000));
      if (P === '22') {
        doorCpu.up += c1 - c0;
        doorCpu.down += cpuMs() - c1;
      }
      await inNet('ssh', [...port, dest, 'rm -f /tmp/big.bin']);
    }
  }

  const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
  const ms = (x: number) => x.toFixed(0);
  const moreOrLess = (d: number) => (d >= 0 ? `${ms(d)} ms more` : `${ms(-d)} ms less`);
  const mbs = (xs: number[]) => Math.max(...xs).toFixed(1);
  const [door, port] = Object.keys(paths) as [string, string];
  const lines = [
    '',
    `**ssh front door** (\`node scripts/bench/frontdoor.ts --runs ${RUNS} --mib ${MIB}\`, ${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpus()[0]?.model.trim()}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the end):`,
    `OpenSSH from the experimenter's namespace into one LXC sliver (tiny image, rate cap raised to ${NET_KBPS} kbit/s), both paths in the same run, interleaved.`,
    '',
    '| path | `ssh … true` median ms | p90 ms | scp up MiB/s (best of 2) | scp down MiB/s (best of 2) |',
    '|---|---:|---:|---:|---:|',
    ...Object.keys(paths).map((n) => `| ${n} | ${ms(q(setup[n]!, 0.5))} | ${ms(q(setup[n]!, 0.9))} | ${mbs(scp[n]!.up)} | ${mbs(scp[n]!.down)} |`),
    '',
    `Set-up: front door ${moreOrLess(q(setup[door]!, 0.5) - q(setup[port]!, 0.5))} at the median (target ≤ 50 ms more). ` +
      `Throughput: ${((100 * Math.max(...scp[door]!.up)) / Math.max(...scp[port]!.up)).toFixed(0)} % up and ${((100 * Math.max(...scp[door]!.down)) / Math.max(...scp[port]!.down)).toFixed(0)} % down of the forwarded port's (target ≥ 90 %). ` +
      `Front door process CPU: ${(doorCpu.up / (2 * MIB)).toFixed(1)} ms/MiB up, ${(doorCpu.down / (2 * MIB)).toFixed(1)} ms/MiB down. Load average at the start: ${loadAtStart}.`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
  if (args.write) appendResults(args.write, lines.join('\n'));
} finally {
  await node.close();
}
