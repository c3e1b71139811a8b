// KVM sliver start-up (issue 5): time from POST …/slivers to an SSH banner on the sliver's
// forwarded port, read from the experimenter's namespace (through the registry, the agent's
// desired-state long-poll, the btrfs snapshot, provisioning, the tap, nftables, define and start),
// beside a bare qemu boot of the same kernel and initramfs on a btrfs snapshot of the same tiny
// image, with the same accelerator, memory and 9p root, rendered by the driver's own
// renderQemuArgv from a vmConfigFromSpec config: from starting qemu to the banner on the guest's
// :22, read from the namespace that holds its tap. Both series in one run, interleaved.
//
//   node scripts/bench/kvm.ts [--runs 5] [--write docs/benchmarks.md]
//
// One node as test/e2e/kvm.test.ts makes it (site kvb, 198.18.240-249.0/24, sliver subnets
// 10.140-149.0.0/24; the e2e and this benchmark never run at the same time). Needs root, qemu and
// the build (bash scripts/setup.sh). Everything lives in namespaces and temp dirs it makes, and is
// removed at the end, also on failure.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { jailArgv, QEMU_PATH, renderQemuArgv, vmConfigFromSpec, vmJailSpec, vmPaths, type Accel, type InstanceSpec, type VmConfig, type VmPaths } from '@planetlite/instance';
import { provisionRoot } from '../../apps/agent/dist/provision.js';
import { startOneNode, until, type OneNode } from '../../test/harness/one-node.ts';
import { appendResults } from './results.ts';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '5' }, write: { type: 'string' } } });
const RUNS = Number(args.runs);
if (!Number.isSafeInteger(RUNS) || RUNS < 1) throw new Error(`--runs must be a positive integer, got ${args.runs}`);
const QEMU = 'qemu-system-x86_64';
/** The guest's RAM in both series (the e2e's kvm slice uses the same). */
const MEMORY_MB = 256;
const BANNER_TIMEOUT_MS = 180_000;
/** The bare VM's link: its own namespace, so any addresses do. */
const BARE_HOST = '10.149.254.1';
const BARE_GUEST = '10.149.254.2';
/** The bare VM's host ids: one range far above any node's slots (it runs jailed as a sliver's qemu does). */
const BARE_IDMAP_BASE = 3_900_000_000;

/**
 * A process inside network namespace `ns` that tries to read an SSH banner from host:port until
 * one arrives, as scripts/bench/sliver.ts's banner(): a connect not answered within 50 ms is
 * abandoned and tried again (before the guest's link is up a SYN is not answered at all), an
 * accepted one gets 2 s to send its banner, attempts start every 5 ms. It prints "ready" once it
 * runs, then the wall-clock ms at which it read `SSH-2.0-` (same clock as this process).
 */
const PROBE = `
const net = require('node:net');
const [host, port, timeoutMs] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const start = Date.now();
process.stdout.write('ready\\n');
function attempt() {
  const s = net.connect({ host, port });
  let done = false, buf = '', t;
  const finish = (ok) => {
    if (done) return;
    done = true; clearTimeout(t); s.destroy();
    if (ok) { process.stdout.write(JSON.stringify({ at: Date.now(), banner: buf.split('\\n')[0].trim() }) + '\\n'); process.exit(0); }
    if (Date.now() - start > timeoutMs) { process.stdout.write(JSON.stringify({ error: 'no banner on ' + host + ':' + port + ' after ' + timeoutMs + ' ms' }) + '\\n'); process.exit(1); }
    setTimeout(attempt, 5);
  };
  t = setTimeout(() => finish(false), 50);
  s.on('connect', () => { clearTimeout(t); t = setTimeout(() => finish(false), 2000); });
  s.on('data', (d) => { buf += d.toString('latin1'); if (buf.length >= 8) finish(buf.startsWith('SSH-2.0-')); });
  s.on('error', () => finish(false));
  s.on('close', () => finish(false));
}
attempt();
`;

interface Probe {
  child: ChildProcess;
  ready: Promise<void>;
  /** Wall-clock ms of the banner. */
  result: Promise<{ at: number; banner: string }>;
}

function startProbe(ns: string, host: string, port: number): Probe {
  const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', process.execPath, '-e', PROBE, host, String(port), String(BANNER_TIMEOUT_MS)], { stdio: ['ignore', 'pipe', 'inherit'] });
  probes.add(child);
  child.once('exit', () => probes.delete(child));
  let out = '';
  let readyFn: () => void = () => undefined;
  const ready = new Promise<void>((r) => (readyFn = r));
  const result = new Promise<{ at: number; banner: string }>((resolveResult, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      for (;;) {
        const nl = out.indexOf('\n');
        if (nl < 0) break;
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        if (line === 'ready') readyFn();
        else {
          const r = JSON.parse(line) as { at?: number; banner?: string; error?: string };
          if (r.error || r.at === undefined) reject(new Error(`banner probe in ${ns}: ${r.error ?? line}`));
          else resolveResult({ at: r.at, banner: r.banner ?? '' });
        }
      }
    });
    child.once('exit', (code) => reject(new Error(`banner probe in ${ns} exited with ${code}`)));
  });
  result.catch(() => undefined);
  return { child, ready, result };
}

/** Wall-clock ms at which a process started (its fork), from /proc/PID/stat and /proc/uptime (10 ms resolution). */
function processStartedAt(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]); // field 22, starttime
  const now = Date.now();
  const uptime = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  return Math.round(now - (uptime - ticks / 100) * 1000);
}

const alive = (pid: number) => {
  const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
  return stat !== '' && !/^\d+ \(.*\) [ZX]/.test(stat);
};

/** An argv with the values that differ between any two VMs replaced by names. */
function normalised(argv: string[], c: VmConfig, p: VmPaths): string[] {
  return argv.map((a) => {
    let s = a.split(p.dir).join('<vmdir>').split(c.rootfs).join('<rootfs>').split(c.id).join('<id>');
    if (c.net) s = s.split(c.net.mac).join('<mac>').split(c.net.tap).join('<tap>');
    return s.replace(/\bip=\S+/, 'ip=<address>').split(c.hostname).join('<hostname>');
  });
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
  return { median: q(0.5), p95: q(0.95), min: s[0]!, max: s.at(-1)! };
};
const load1 = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
const sh = (cmd: string, argv: string[]) => execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

// What this process made, for the cleanup (also on failure or a signal).
const probes = new Set<ChildProcess>();
const bareQemus = new Map<number, Promise<unknown>>();
const bareNamespaces = new Set<string>();
const bareRoots = new Set<string>();
let node: OneNode | null = null;

async function cleanup(): Promise<void> {
  for (const p of probes) p.kill('SIGKILL');
  for (const [pid, exited] of bareQemus) {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    await exited;
    bareQemus.delete(pid);
  }
  for (const ns of bareNamespaces) {
    try { sh('ip', ['netns', 'del', ns]); } catch { /* already gone */ }
    bareNamespaces.delete(ns);
  }
  for (const root of bareRoots) {
    try { sh('btrfs', ['subvolume', 'delete', root]); } catch { /* already gone */ }
    bareRoots.delete(root);
  }
  const n = node;
  node = null;
  // The harness removes what the agent made: its slivers' qemu, taps, table, snapshots, the pool.
  await n?.close();
}

interface ApiRun { total: number; posted: number; qemuStarted: number; banner: number }
interface BareRun { total: number }

async function apiRun(n: OneNode, i: number | 'w'): Promise<{ run: ApiRun; config: VmConfig; paths: VmPaths; argv: string[] }> {
  const slice = `kvb_a${i}`;
  await n.admin.createSlice({ name: slice, description: 'kvm start-up benchmark', url: 'https://example.org', kind: 'kvm', image: 'tiny', resources: { memory_mb: MEMORY_MB } });
  const t0 = Date.now();
  const s = await n.admin.createSliver(slice, n.nodeId);
  const posted = Date.now();
  const probe = startProbe(n.net, n.publicAddress, s.ports.first);
  const { at } = await probe.result;
  const paths = vmPaths(join(n.stateDir, 'vm'), s.id);
  const pid = Number(readFileSync(paths.pidfile, 'utf8').trim());
  const qemuStarted = processStartedAt(pid);
  const config = JSON.parse(readFileSync(paths.config, 'utf8')) as VmConfig;
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a, k, all) => k < all.length - 1 || a !== '');
  await n.admin.deleteSlice(slice);
  await until(`sliver ${s.id} to be gone`, async () => n.admin.getSliver(s.id).then(() => false, () => true), 180_000);
  await until(`qemu of sliver ${s.id} to exit`, async () => !alive(pid), 60_000);
  return { run: { total: at - t0, posted: posted - t0, qemuStarted: qemuStarted - t0, banner: at - qemuStarted }, config, paths, argv };
}

async function bareRun(n: OneNode, i: number | 'w', image: string, boot: VmConfig['boot'], accel: Accel): Promise<{ run: BareRun; config: VmConfig; paths: VmPaths; argv: string[] }> {
  const ns = `pl-kvbbare-${n.tag}${i}`;
  const tap = `plkvbt${i}`;
  bareNamespaces.add(ns);
  sh('ip', ['netns', 'add', ns]);
  // The tap as the nftables driver makes a kvm sliver's link: host end .1 of a /30, ARP retried every 100 ms.
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  sh('ip', ['-n', ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  sh('ip', ['-n', ns, 'addr', 'add', `${BARE_HOST}/30`, 'dev', tap]);
  sh('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', `net.ipv4.neigh.${tap}.retrans_time_ms=100`]);
  sh('ip', ['-n', ns, 'link', 'set', 'dev', tap, 'up']);
  // A snapshot of the same image subvolume, provisioned as the agent provisions a sliver's root.
  const rootfs = join(n.stateDir, 'pool', `kvb-bare-${i}`);
  bareRoots.add(rootfs);
  sh('btrfs', ['subvolume', 'snapshot', image, rootfs]);
  // A plain snapshot: its files keep the image's ids (the agent's rootIdShift for a snapshot is 0).
  await provisionRoot({ rootfs, slice: 'kvb_bare', keys: [readFileSync(`${n.key}.pub`, 'utf8').trim()], idShift: 0 });
  const id = randomUUID();
  const spec: InstanceSpec = {
    id, hostname: 'kvb_bare', rootfs, memoryMb: MEMORY_MB, cpuShares: 1024, cpuCapPercent: null, pids: 4096, idmapBase: BARE_IDMAP_BASE,
    net: { link: tap, address: `${BARE_GUEST}/30`, gateway: BARE_HOST },
  };
  const config = vmConfigFromSpec(spec, boot, availableParallelism());
  const paths = vmPaths(join(n.dir, 'bare'), id);
  mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
  // The driver's jail, less its cgroups: the files qemu writes belong to the VM's uid.
  mkdirSync(paths.run, { mode: 0o700 });
  mkdirSync(paths.jail, { mode: 0o700 });
  for (const f of [paths.pidfile, paths.console]) writeFileSync(f, '', { mode: 0o600 });
  for (const p of [paths.run, paths.pidfile, paths.console]) chownSync(p, BARE_IDMAP_BASE, BARE_IDMAP_BASE);
  const argv = renderQemuArgv(config, paths, accel);
  const jailed = jailArgv(vmJailSpec(config, paths, { accel, ldCache: existsSync('/etc/ld.so.cache'), cgroups: [], extraGid: null }), [QEMU_PATH, ...argv]);
  const probe = startProbe(ns, BARE_GUEST, 22);
  await probe.ready;
  // As the driver's spawnQemu: detached, in the namespace, jailed (nsenter and the jail helper exec qemu: the same pid), output to a log.
  const fd = openSync(paths.qemuLog, 'a', 0o600);
  const t0 = Date.now();
  const child = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', ...jailed], { detached: true, stdio: ['ignore', fd, fd], cwd: paths.dir, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' } });
  closeSync(fd);
  const exited = new Promise((r) => { child.once('exit', r); child.once('error', r); });
  bareQemus.set(child.pid!, exited);
  let answered = false;
  const died = exited.then(() => {
    if (!answered) throw new Error(`bare qemu exited before the banner: ${readFileSync(paths.qemuLog, 'utf8').trim().split('\n').slice(-5).join('\n')}`);
    return { at: NaN, banner: '' };
  });
  const { at } = await Promise.race([probe.result, died]);
  answered = true;
  // Teardown (not timed): qemu, the namespace with its tap, the snapshot, the VM's files.
  process.kill(child.pid!, 'SIGKILL');
  await exited;
  bareQemus.delete(child.pid!);
  sh('ip', ['netns', 'del', ns]);
  bareNamespaces.delete(ns);
  sh('btrfs', ['subvolume', 'delete', rootfs]);
  bareRoots.delete(rootfs);
  rmSync(paths.dir, { recursive: true, force: true });
  return { run: { total: at - t0 }, config, paths, argv: [QEMU_PATH, ...argv] };
}

async function main(): Promise<void> {
  const started = new Date();
  const loadStart = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  node = await startOneNode({
    site: 'kvb',
    octets: [240, 10],
    sliverSubnet: (o) => `10.${140 + (o % 10)}.0.0/24`,
    image: { name: 'tiny', file: 'tiny.tar' },
    agentSettings: { vm: 'auto' },
  });
  const n = node;
  const caps = await until('the node to report that it runs VMs', async () => {
    const nd = await n.admin.getNode(n.nodeId);
    return nd.capabilities.kvm ? nd.capabilities : null;
  }, 300_000);
  const accel = caps.kvm_accel!;
  const imagesDir = join(n.stateDir, 'pool', 'images');
  const images = readdirSync(imagesDir).filter((f) => /^[0-9a-f]{64}$/.test(f));
  if (images.length !== 1) throw new Error(`expected one image in ${imagesDir}, found ${images.join(', ') || 'none'}`);
  const image = join(imagesDir, images[0]!);

  const api: ApiRun[] = [];
  const bare: BareRun[] = [];
  const order: string[] = [];
  const loads: number[] = [];
  let ref: { config: VmConfig; paths: VmPaths; argv: string[] } | null = null;
  let argvSame: boolean | null = null;
  // One untimed pair first: the node's first VM sliver and the first boot of the kernel after the
  // node was set up pay for cold caches, which would land on whichever series went first.
  const warm = await apiRun(n, 'w');
  ref = warm;
  const warmBare = await bareRun(n, 'w', image, warm.config.boot, accel);
  process.stderr.write(`warm-up (not counted): A ${warm.run.total} ms, B ${warmBare.run.total} ms\n`);
  for (let i = 0; i < RUNS; i++) {
    const seq = i % 2 === 0 ? (['A', 'B'] as const) : (['B', 'A'] as const);
    order.push(seq.join(''));
    for (const which of seq) {
      loads.push(load1());
      if (which === 'A') {
        const r = await apiRun(n, i);
        api.push(r.run);
        ref ??= r;
        process.stderr.write(`run ${i + 1}/${RUNS} A: POST → banner ${r.run.total} ms (POST answered ${r.run.posted} ms, qemu started ${r.run.qemuStarted} ms, qemu → banner ${r.run.banner} ms), load ${loads.at(-1)}\n`);
      } else {
        const b = await bareRun(n, i, image, ref!.config.boot, accel);
        bare.push(b.run);
        const same = ['memoryMb', 'vcpus', 'boot'].every((k) => JSON.stringify(b.config[k as keyof VmConfig]) === JSON.stringify(ref!.config[k as keyof VmConfig]));
        if (!same) throw new Error(`the bare VM's config differs from the sliver's: ${JSON.stringify(b.config)} vs ${JSON.stringify(ref!.config)}`);
        const x = normalised(b.argv, b.config, b.paths);
        const y = normalised(ref!.argv, ref!.config, ref!.paths);
        const eq = JSON.stringify(x) === JSON.stringify(y);
        if (!eq && argvSame !== false) process.stderr.write(`bare argv differs from the sliver's qemu:\n  bare:   ${x.join(' ')}\n  sliver: ${y.join(' ')}\n`);
        argvSame = (argvSame ?? true) && eq;
        process.stderr.write(`run ${i + 1}/${RUNS} B: qemu start → banner ${b.run.total} ms, load ${loads.at(-1)}\n`);
      }
    }
  }
  loads.push(load1());
  const loadEnd = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

  const a = stats(api.map((r) => r.total));
  const b = stats(bare.map((r) => r.total));
  const pre = stats(api.map((r) => r.qemuStarted));
  const boot = stats(api.map((r) => r.banner));
  const post = stats(api.map((r) => r.posted));
  const row = (name: string, s: ReturnType<typeof stats>, count: number) => `| ${name} | ${count} | ${s.median} | ${s.p95} | ${s.min} | ${s.max} |`;
  const kernel = sh('uname', ['-r']).trim();
  const qemuVersion = sh(QEMU, ['--version']).split('\n')[0]!.replace(/^QEMU emulator version /, '');
  const dateText = sh('date', []).trim();
  const command = ['node', 'scripts/bench/kvm.ts', ...process.argv.slice(2)].join(' ');
  const accelArg = ref!.argv[ref!.argv.indexOf('-accel') + 1];
  const text = [
    `## KVM sliver start-up (\`node scripts/bench/kvm.ts\`), ${started.toISOString().slice(0, 10)}`,
    '',
    `Run \`${command}\` on ${dateText}.`,
    '',
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}, ${Math.round(totalmem() / 2 ** 30)} GiB, kernel ${kernel}, qemu ${qemuVersion}, Node ${process.version}.`,
    `Accelerator: **${accel}** in both series (\`-accel ${accelArg}\`)${existsSync('/dev/kvm') ? '' : '; this machine has no /dev/kvm'}.`,
    `Both VMs: ${ref!.config.memoryMb} MiB, ${ref!.config.vcpus} vCPU, the node kernel ${ref!.config.boot.release} (ELF vmlinux booted through PVH) with the node-built initramfs, and the tiny image (busybox + sshd) as the 9p root on a btrfs snapshot.`,
    `One node as in test/e2e/kvm.test.ts: the registry (embedded PGlite) and the agent run in the benchmark's process, and the agent's VM driver checked the node first (accel ${accel}).`,
    '',
    '| path | runs | median ms | p95 ms | min | max |',
    '|---|---:|---:|---:|---:|---:|',
    row('A. POST /v1/slices/…/slivers → `SSH-2.0-` on the forwarded port, read from the experimenter namespace', a, api.length),
    row('   of which POST → the sliver\'s qemu started (from its /proc start time)', pre, api.length),
    row('   of which the sliver\'s qemu started → banner', boot, api.length),
    row('B. bare qemu: qemu started → `SSH-2.0-` on the guest\'s :22, read from the namespace with its tap', b, bare.length),
    '',
    `Ratio of medians A/B: **${(a.median / b.median).toFixed(2)}×**. The POST itself answered in ${post.median} ms (median).`,
    '',
    `Runs, interleaved in one process (order per run: ${order.join(', ')}); A / B in ms: ${api.map((r, k) => `${r.total} / ${bare[k]!.total}`).join(', ')}. Before them, one untimed warm-up pair (the node's first VM sliver and the first boots after setup): A ${warm.run.total} ms, B ${warmBare.run.total} ms.`,
    `Load average (1 min) before each measurement: ${Math.min(...loads).toFixed(2)}–${Math.max(...loads).toFixed(2)} (${loadStart} at the start, ${loadEnd} at the end); other work may share the ${cpus().length} cores. A TCG boot is CPU-bound, so both series slow down with load.`,
    '',
    'How B is made: a btrfs snapshot of the same image subvolume the agent snapshots, provisioned with the agent\'s own provisionRoot (slice user, keys, host key); a namespace with a tap as the nftables driver makes one (host end .1 of a /30, ARP retried every 100 ms); the guest\'s address through `ip=`.',
    `Its argv is the driver's renderQemuArgv of a config from vmConfigFromSpec, with the sliver's kernel, initramfs, memory and vCPUs; qemu is spawned detached through \`nsenter --net\` as the driver spawns it. After replacing the values that differ between any two VMs (id, paths, tap, MAC, hostname, address), B's argv ${argvSame ? '**equals**' : '**differs from**'} the command line of the sliver's running qemu. All of B's setup happens before its clock starts.`,
    '',
    'What A adds to B: the POST (the registry places the sliver and records it); the agent\'s desired-state long-poll returning the new document; its reconcile pass: the btrfs snapshot and qgroup limit, provisioning (slice user, keys, a new ssh host key), and, side by side with those, the tap, its tc caps and the rewrite of the nftables table with the DNAT rule; the VM config (define) and the start (spawn, then waiting for the pidfile and QMP); then the banner is read through DNAT from the experimenter namespace instead of directly. Between runs A also deletes the slice and waits until the agent has stopped the VM and the registry has dropped the sliver.',
    '',
  ].join('\n');
  process.stdout.write(`${text}\n`);
  if (args.write) appendResults(args.write, text);
}

let stopping = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`bench: ${sig}, cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

try {
  await main();
} catch (err) {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
} finally {
  if (!stopping) await cleanup();
}
