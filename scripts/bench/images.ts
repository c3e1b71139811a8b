// Image distribution (issue 4): the time for one image to reach N = 1, 2, 4, 8 nodes, over
// BitTorrent (the registry's tracker, seeder and web seed, and the nodes seeding to each other)
// against plain HTTP from the registry (the web seed alone), in the same run, when every link
// (the registry's included) is capped at the same rate in both directions.
//
//   node scripts/bench/images.ts [--size-mib 256] [--rate-mbit 64] [--nodes 1,2,4,8] [--modes bt,http]
//                                [--rounds 1] [--write docs/benchmarks.md] [--svg docs/bench/images.svg]
//                                [--json FILE (every run's figures)] [--seed-upload-kbps K] [--verbose]
//   node scripts/bench/images.ts --replot FILE.json [--svg …]   (the chart again from --json figures)
//
// The network: a bridge in namespace pl-bimg-inet; the registry (`planetlite-registry serve`, a real
// process on a throwaway PostgreSQL) in pl-bimg-reg at 198.18.230.1, and the nodes in pl-bimg-n1…
// at 198.18.230.11…, each joined to the bridge with a veth whose two ends are shaped with tbf at
// the same rate. Each node is scripts/bench/images-node.ts, the agent's ImageFetcher alone, run under
// `nsenter --net`. Every run publishes the image under a new name (a new infohash: a fresh swarm)
// and gives every node an empty directory; its time is from "go" to the LAST node holding the
// archive with its sha256 checked. Nodes keep seeding until the last one is done.
//
// Needs root, iproute2's tc, curl, PostgreSQL (bash scripts/setup.sh) and the build
// (npx tsc -b apps/agent apps/registry). Everything it makes (namespaces, processes, temp dirs,
// the database) is removed at the end, on failure and on Ctrl-C too.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startPostgres, type PostgresServer } from '../../test/harness/services.ts';
import { joinInternet, type Internet } from '../../test/harness/testbed.ts';
import { appendResults } from './results.ts';

const { values: args } = parseArgs({
  options: {
    'size-mib': { type: 'string', default: '256' },
    'rate-mbit': { type: 'string', default: '64' },
    nodes: { type: 'string', default: '1,2,4,8' },
    modes: { type: 'string', default: 'bt,http' },
    rounds: { type: 'string', default: '1' },
    write: { type: 'string' },
    svg: { type: 'string', default: 'docs/bench/images.svg' },
    json: { type: 'string' },
    'seed-upload-kbps': { type: 'string' },
    replot: { type: 'string' },
    verbose: { type: 'boolean', default: false },
  },
});
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REGISTRY_MAIN = join(ROOT, 'apps/registry/dist/main.js');
const NODE_SCRIPT = join(ROOT, 'scripts/bench/images-node.ts');
const MiB = 1024 * 1024;
const SIZE = Number(args['size-mib']) * MiB;
const RATE_MBIT = Number(args['rate-mbit']);
const NS = (args.nodes ?? '').split(',').map(Number);
const MODES = (args.modes ?? '').split(',') as Mode[];
const ROUNDS = Number(args.rounds);
const MAX_N = Math.max(...NS);
// bt-rarest and bt-offset are experiments, not the product: the same fetcher with its torrents
// picking pieces rarest first, or sequentially from a random piece on (images-node.ts --strategy),
// where the fetcher as it is keeps webtorrent's order, sequential from piece 0.
// bt-offset-nows is bt-offset without the web seed (the magnet's ws= dropped, no url-list).
type Mode = 'bt' | 'http' | 'bt-rarest' | 'bt-offset' | 'bt-offset-nows';
const MODE_NAME: Record<Mode, string> = {
  bt: 'BitTorrent', http: 'HTTP only',
  'bt-rarest': 'BitTorrent, rarest first (experiment)', 'bt-offset': 'BitTorrent, random start (experiment)',
  'bt-offset-nows': 'BitTorrent, random start, no web seed (experiment)',
};

// The address plan: 198.18.230.0/24 and namespaces named pl-bimg-* only.
const NET: Internet = { ns: 'pl-bimg-inet', bridge: 'bimgbr', prefix: '198.18.230' };
const REG = { ns: 'pl-bimg-reg', link: 'bimgreg', host: 1 };
const REG_ADDR = `${NET.prefix}.${REG.host}`;
const REG_PORT = 8080;
const TORRENT_PORT = 6881;
const REG_URL = `https://${REG_ADDR}:${REG_PORT}`;
const nodeNs = (i: number) => ({ ns: `pl-bimg-n${i}`, link: `bimgn${i}`, host: 10 + i });
const ADMIN = { email: 'bench@planetlite.test', password: 'bench-password' };

if (!(NS.length && NS.every((n) => Number.isInteger(n) && n >= 1 && n <= 50))) throw new Error('--nodes: a list of node counts from 1 to 50, like 1,2,4,8');
if (!MODES.length || !MODES.every((m) => m in MODE_NAME)) throw new Error(`--modes: a list of ${Object.keys(MODE_NAME).join(', ')}`);
if (!(SIZE > 0 && RATE_MBIT > 0 && ROUNDS >= 1)) throw new Error('--size-mib, --rate-mbit and --rounds must be positive');

// ---- cleanup: whatever happens, the namespaces, processes and temp dirs go ---------------------
const children = new Set<ChildProcess>();
const namespaces: string[] = [];
let tmp: string | null = null;
let pg: PostgresServer | null = null;

function cleanupSync(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
  for (const ns of namespaces.splice(0).reverse()) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = null;
}
process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nimages bench: ${sig}, cleaning up\n`);
    cleanupSync();
    process.exit(130);
  });
}

// ---- small helpers -----------------------------------------------------------------------------
function sh(file: string, argv: string[], timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, argv, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${argv.join(' ')}: ${err.message}${stderr ? `\n${stderr.trim()}` : ''}${stdout ? `\n${stdout.trim()}` : ''}`));
      else resolve(stdout);
    });
  });
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const inNs = (ns: string) => ['--net=/run/netns/' + ns];
const progress = (s: string) => process.stderr.write(`${s}\n`);

/** A request to the registry, made with curl from inside the registry's own namespace. */
/** The registry's own CA (HTTPS is its default), made under its data dir on its first start. */
const registryCa = () => join(tmp!, 'registry', 'tls', 'ca.pem');

async function curl(argv: string[], timeoutMs = 120_000): Promise<string> {
  return sh('nsenter', [...inNs(REG.ns), 'curl', '-sS', '--fail-with-body', '--cacert', registryCa(), ...argv], timeoutMs);
}

/** Resolves as p does, or rejects after ms; the timer never outlives p. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${Math.round(ms / 1000)} s`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---- the network -------------------------------------------------------------------------------

/** tbf on one interface: the rate it sends at. */
async function shape(ns: string, dev: string): Promise<void> {
  await sh('tc', ['-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${RATE_MBIT}mbit`, 'burst', '64kb', 'latency', '50ms']);
}

async function buildNetwork(): Promise<void> {
  const mine = (await sh('ip', ['netns', 'list'])).split('\n').map((l) => l.split(' ')[0]).filter((n) => n?.startsWith('pl-bimg-'));
  if (mine.length) throw new Error(`namespaces ${mine.join(', ')} exist already: another run of this benchmark, or a crashed one (remove them with ip netns del)`);
  namespaces.push(NET.ns);
  await sh('ip', ['netns', 'add', NET.ns]);
  await sh('ip', ['-n', NET.ns, 'link', 'set', 'lo', 'up']);
  await sh('ip', ['-n', NET.ns, 'link', 'add', NET.bridge, 'type', 'bridge']);
  await sh('ip', ['-n', NET.ns, 'link', 'set', NET.bridge, 'up']);
  for (const l of [REG, ...Array.from({ length: MAX_N }, (_, i) => nodeNs(i + 1))]) {
    namespaces.push(l.ns);
    await joinInternet(NET, l);
    // Every link at the same rate both ways: egress of the namespace's end (what it sends) and of
    // the bridge's end (what it receives).
    await shape(l.ns, l.link);
    await shape(NET.ns, `${l.link}i`);
  }
}

/** Bytes a shaped interface has sent so far. */
async function sentBytes(ns: string, dev: string): Promise<number> {
  const qd = JSON.parse(await sh('tc', ['-s', '-j', '-n', ns, 'qdisc', 'show', 'dev', dev])) as { kind: string; bytes: number }[];
  return qd.find((q) => q.kind === 'tbf')?.bytes ?? 0;
}

// ---- CPU ---------------------------------------------------------------------------------------
function cpuTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}
function processCpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

// ---- the registry ------------------------------------------------------------------------------
let registry: ChildProcess | null = null;
let token = '';

async function startRegistry(dbUrl: string, imagesDir: string): Promise<void> {
  // The registry reaches PostgreSQL over its Unix socket: a socket crosses network namespaces.
  const db = new URL(dbUrl);
  const socketUrl = `postgres://postgres@localhost:${pg!.port}${db.pathname}?host=${encodeURIComponent(pg!.dir)}`;
  registry = spawn('nsenter', [...inNs(REG.ns), process.execPath, REGISTRY_MAIN, 'serve', '--listen', `${REG_ADDR}:${REG_PORT}`, '--data-dir', join(tmp!, 'registry')], {
    cwd: tmp!,
    env: {
      ...process.env,
      DATABASE_URL: socketUrl,
      PLANETLITE_LOG_LEVEL: 'warn',
      PLANETLITE_ADMIN_EMAIL: ADMIN.email,
      PLANETLITE_ADMIN_PASSWORD: ADMIN.password,
      PLANETLITE_IMAGES_DIR: imagesDir,
      PLANETLITE_TORRENT_PORT: String(TORRENT_PORT),
      // Unset by default: the links' tbf is the cap. Set, it is the seeder's own upload cap.
      ...(args['seed-upload-kbps'] ? { PLANETLITE_SEED_UPLOAD_KBPS: args['seed-upload-kbps'] } : {}),
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  children.add(registry);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (registry.exitCode !== null) throw new Error(`the registry exited with code ${registry.exitCode}`);
    if (existsSync(registryCa()) && (await curl([`${REG_URL}/healthz`], 5_000).then(() => true, () => false))) break;
    if (Date.now() > deadline) throw new Error('the registry did not answer /healthz within 60 s');
    await sleep(200);
  }
  const login = JSON.parse(await curl(['-H', 'content-type: application/json', '-d', JSON.stringify(ADMIN), `${REG_URL}/v1/auth/login`])) as { token: string };
  token = login.token;
}

interface Published { name: string; sha256: string; magnet: string | null; web_seed: string | null; infohash: string | null }

/** POST /v1/images as the admin: over the registry's own loopback, so no cap slows it. */
async function publish(name: string, file: string, sha256: string): Promise<Published> {
  const out = await curl([
    '-X', 'POST', '-T', file, '-H', 'expect:', '-H', `authorization: Bearer ${token}`,
    '-H', 'content-type: application/octet-stream', '-H', `x-content-sha256: ${sha256}`,
    `${REG_URL}/v1/images?name=${encodeURIComponent(name)}&kinds=lxc`,
  ], 600_000);
  return JSON.parse(out) as Published;
}

// ---- the image ---------------------------------------------------------------------------------
/** SIZE bytes of random data (incompressible), with its sha256. The fetcher never opens it. */
function makeArchive(file: string): string {
  const fd = openSync(file, 'w');
  const hash = createHash('sha256');
  const buf = Buffer.alloc(4 * MiB);
  try {
    for (let left = SIZE; left > 0; left -= buf.length) {
      const chunk = left >= buf.length ? buf : buf.subarray(0, left);
      randomFillSync(chunk);
      hash.update(chunk);
      writeSync(fd, chunk);
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

// ---- one run: N nodes, one mode -----------------------------------------------------------------
interface NodeResult {
  node: number;
  seconds: number;
  bytes_from_peers: number;
  bytes_from_registry: number;
  bytes_from_webseed: number;
  fell_back_to_http: boolean;
  cpu_seconds: number;
}
interface Run {
  n: number;
  mode: Mode;
  round: number;
  seconds: number;
  nodes: NodeResult[];
  registrySent: number;
  nodesSent: number;
  cpuBusy: number;
  registryCpu: number;
  load: number;
  failures: string[];
}

interface Worker {
  i: number;
  proc: ChildProcess;
  loaded: Promise<void>;
  done: Promise<NodeResult>;
  exited: Promise<void>;
  progress: number;
  failures: string[];
  /** Its last progress line (the fetcher's report, its CPU time and its torrent's wires). */
  last?: Record<string, unknown>;
}

function startWorker(i: number, dir: string, target: object, mode: Mode): Worker {
  const { ns } = nodeNs(i);
  const extra = mode === 'bt-rarest' ? ['--strategy', 'rarest'] : mode.startsWith('bt-offset') ? ['--strategy', 'offset'] : [];
  const proc = spawn('nsenter', [...inNs(ns), process.execPath, NODE_SCRIPT, '--dir', dir, '--name', `n${i}`, '--target', JSON.stringify(target), '--ca', registryCa(), ...extra], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(proc);
  const w = { i, proc, progress: 0, failures: [] as string[] } as Partial<Worker> as Worker;
  let onLoaded!: () => void;
  let onDone!: (r: NodeResult) => void;
  let onGone!: (err: Error) => void;
  w.loaded = new Promise<void>((resolve, reject) => {
    onLoaded = resolve;
    proc.once('exit', () => reject(new Error(`node ${i} exited before it was ready`)));
  });
  w.done = new Promise<NodeResult>((resolve, reject) => {
    onDone = resolve;
    onGone = reject;
  });
  w.loaded.catch(() => {});
  w.done.catch(() => {});
  w.exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.once('exit', (code, signal) => {
    children.delete(proc);
    onGone(new Error(`node ${i} exited (code ${code}, signal ${signal}) before it had the image`));
  });
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(line) as Record<string, unknown>;
    } catch {
      progress(`[n${i}] ${line}`);
      return;
    }
    if (m.event === 'loaded') onLoaded();
    else if (m.event === 'progress') {
      w.progress = Number(m.progress ?? 0);
      w.last = m;
    }
    else if (m.event === 'failed') {
      w.failures.push(String(m.error));
      progress(`[n${i}] fetch failed: ${String(m.error)}`);
    } else if (m.event === 'done') {
      w.progress = 1;
      onDone({ node: i, ...(m as Omit<NodeResult, 'node'>) });
    }
  });
  createInterface({ input: proc.stderr! }).on('line', (line) => {
    if (args.verbose || /warn|error|fatal|no torrent metadata/.test(line)) progress(line.startsWith('[') ? line : `[n${i}] ${line}`);
  });
  return w;
}

async function runOnce(n: number, mode: Mode, round: number, image: Published): Promise<Run> {
  const noWebSeed = mode === 'bt-offset-nows';
  const magnet = mode === 'http' ? null : noWebSeed ? image.magnet!.replace(/&ws=[^&]*/, '') : image.magnet;
  const target = { name: image.name, sha256: image.sha256, magnet, webSeed: noWebSeed ? null : image.web_seed };
  const runDir = join(tmp!, `run-${mode}-${n}-${round}`);
  mkdirSync(runDir);
  const workers = Array.from({ length: n }, (_, k) => startWorker(k + 1, join(runDir, `n${k + 1}`), target, mode));
  try {
    await within(Promise.all(workers.map((w) => w.loaded)), 60_000, 'the nodes did not start');
    const links = [{ ns: REG.ns, dev: REG.link }, ...workers.map((w) => ({ ns: nodeNs(w.i).ns, dev: nodeNs(w.i).link }))];
    const sentBefore = await Promise.all(links.map((l) => sentBytes(l.ns, l.dev)));
    const cpuBefore = cpuTicks();
    const regCpuBefore = processCpuSeconds(registry?.pid);
    const loadBefore = loadavg()[0]!;

    const t0 = performance.now();
    for (const w of workers) w.proc.stdin!.write('go\n');
    // The slowest plausible run: everything through the registry's link one node after another, ×3.
    const limitMs = Math.max(120_000, 3 * n * ((SIZE * 8) / (RATE_MBIT * 1e6)) * 1000);
    const status = setInterval(() => {
      progress(`  ${MODE_NAME[mode]} N=${n}: ${((performance.now() - t0) / 1000).toFixed(0)} s, ${workers.map((w) => `${Math.round(w.progress * 100)}%`).join(' ')}`);
      if (args.verbose) for (const w of workers) if (w.last) progress(`    n${w.i} ${JSON.stringify(w.last)}`);
    }, 10_000);
    let nodes: NodeResult[];
    try {
      nodes = await within(Promise.all(workers.map((w) => w.done)), limitMs, 'not every node had the image');
    } finally {
      clearInterval(status);
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpuAfter = cpuTicks();
    const registryCpu = processCpuSeconds(registry?.pid) - regCpuBefore;
    const sentAfter = await Promise.all(links.map((l) => sentBytes(l.ns, l.dev)));
    const sent = sentAfter.map((b, k) => b - sentBefore[k]!);
    return {
      n, mode, round, seconds, nodes,
      registrySent: sent[0]!,
      nodesSent: sent.slice(1).reduce((a, b) => a + b, 0),
      cpuBusy: (cpuAfter.busy - cpuBefore.busy) / (cpuAfter.total - cpuBefore.total),
      registryCpu,
      load: Math.max(loadBefore, loadavg()[0]!),
      failures: workers.flatMap((w) => w.failures),
    };
  } finally {
    // Only now, with every node done, may they stop seeding to each other.
    for (const w of workers) if (w.proc.exitCode === null) w.proc.stdin!.end('exit\n');
    await Promise.race([Promise.all(workers.map((w) => w.exited)), sleep(15_000)]);
    for (const w of workers) if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill('SIGKILL');
    await Promise.race([Promise.all(workers.map((w) => w.exited)), sleep(5_000)]);
    rmSync(runDir, { recursive: true, force: true });
  }
}

// ---- the plot ----------------------------------------------------------------------------------
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** A line chart of seconds against N, one line per mode, plus the target (1.5 × BT at 1 node). */
function chart(series: { mode: Mode; points: [number, number][] }[], title: string, subtitle: string): string {
  const W = 720, H = 440, L = 70, R = 60, T = 58, B = 56;
  const maxN = Math.max(...series.flatMap((s) => s.points.map((p) => p[0])));
  const bt1 = series.find((s) => s.mode === 'bt')?.points.find((p) => p[0] === 1)?.[1];
  const maxY = Math.max(...series.flatMap((s) => s.points.map((p) => p[1])), bt1 ? 1.5 * bt1 : 0);
  const step = niceStep(maxY / 6);
  const top = Math.ceil((maxY * 1.05) / step) * step;
  const x = (n: number) => L + (n / maxN) * (W - L - R);
  const y = (s: number) => T + (1 - s / top) * (H - T - B);
  const colour: Record<Mode, string> = { bt: '#1f77b4', http: '#d62728', 'bt-rarest': '#2ca02c', 'bt-offset': '#9467bd', 'bt-offset-nows': '#8c564b' };
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${L}" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`);
  out.push(`<text x="${L}" y="40" fill="#555">${esc(subtitle)}</text>`);
  for (let v = 0; v <= top + 1e-9; v += step) {
    out.push(`<line x1="${L}" x2="${W - R}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${L - 8}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${fmt(v)}</text>`);
  }
  const ticks = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  for (const n of ticks) {
    out.push(`<line x1="${x(n)}" x2="${x(n)}" y1="${H - B}" y2="${H - B + 5}" stroke="#333"/>`);
    out.push(`<text x="${x(n)}" y="${H - B + 19}" text-anchor="middle">${n}</text>`);
  }
  out.push(`<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`);
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 14}" text-anchor="middle">nodes fetching the image at once (N)</text>`);
  out.push(`<text transform="translate(18 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">seconds until the last node has it</text>`);
  if (bt1) {
    out.push(`<line x1="${L}" x2="${W - R}" y1="${y(1.5 * bt1).toFixed(1)}" y2="${y(1.5 * bt1).toFixed(1)}" stroke="${colour.bt}" stroke-dasharray="6 4" opacity="0.6"/>`);
  }
  for (const s of series) {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    out.push(`<polyline fill="none" stroke="${colour[s.mode]}" stroke-width="2.5" points="${pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) {
      out.push(`<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="4" fill="${colour[s.mode]}"/>`);
      out.push(`<text x="${(x(p[0]) + 7).toFixed(1)}" y="${(y(p[1]) - 7).toFixed(1)}" fill="${colour[s.mode]}">${p[1].toFixed(1)}</text>`);
    }
  }
  const legend: [string, string, string][] = series.map((s) => [colour[s.mode], '', MODE_NAME[s.mode]]);
  if (bt1) legend.push([colour.bt, '6 4', 'target: 1.5 × BitTorrent at N = 1']);
  // Top left: the lines rise to the right, so that corner stays empty.
  legend.forEach(([c, dash, label], k) => {
    const ly = T + 14 + k * 20;
    out.push(`<line x1="${L + 16}" x2="${L + 42}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2.5"${dash ? ` stroke-dasharray="${dash}" opacity="0.6"` : ''}/>`);
    out.push(`<text x="${L + 48}" y="${ly + 4}">${esc(label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
/** The chart of a benchmark's runs (the median time of each mode and N) into file. */
function plot(runs: Run[], size: number, rateMbit: number, date: Date, file: string): void {
  const modes = [...new Set(runs.map((r) => r.mode))];
  const ns = [...new Set(runs.map((r) => r.n))].sort((a, b) => a - b);
  const sec = (n: number, mode: Mode) => median(runs.filter((r) => r.n === n && r.mode === mode).map((r) => r.seconds));
  const maxN = ns.at(-1)!;
  const ratios = modes.map((mode) => `${MODE_NAME[mode].split(',')[0]}${mode.startsWith('bt-') ? ` (${mode.slice(3)})` : ''} ${(sec(maxN, mode) / sec(1, mode)).toFixed(2)}`);
  const series = modes.map((mode) => ({ mode, points: ns.map((n): [number, number] => [n, sec(n, mode)]) }));
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, chart(series, `One ${size / MiB} MiB image to N nodes, every link ${rateMbit} Mbit/s`,
    `${date.toISOString().slice(0, 10)}, ${cpus().length} cores; time at N = ${maxN} / time at N = 1: ${ratios.join(', ')}`));
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
}
const fmt = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

const SECTION = '## Image distribution, BitTorrent against HTTP (`node scripts/bench/images.ts --write docs/benchmarks.md`)';
const ABOUT = [
  'What it does: one "internet" bridge in a network namespace; the registry (`planetlite-registry serve`',
  'on a throwaway PostgreSQL, its tracker, seeder and web seed) in a namespace of its own, and N node',
  'namespaces, all joined to the bridge with a veth each. Both ends of every veth are shaped with tbf',
  'to the same rate, so each node and the registry can send and receive at that rate and no more.',
  'Each node is `scripts/bench/images-node.ts`: the agent\'s `ImageFetcher` alone (nothing is',
  'imported), run under `nsenter --net`. For each N, N nodes start at once with empty directories:',
  '- BitTorrent: the magnet link (the registry\'s tracker and seeder, the web seed as url-list), and the',
  '  nodes seed to each other until the last one is done;',
  '- HTTP only: no magnet, a plain download from the web seed.',
  '',
  'Each run publishes the image under a new name (`POST /v1/images`), which gives a new infohash and so',
  'a swarm nobody has joined. The time is from "go" to the last node having the archive with its',
  'sha256 checked. "Registry sent" and "nodes sent" are the bytes the shaped interfaces sent during',
  'the run, in units of the image (all nodes together for the latter), headers included. "CPU busy"',
  'is the whole machine\'s, from /proc/stat, over the run; "CPU s per node" is a node process\'s own',
  'time from "go" until it had the image; the load average is the higher of the start and the end.',
  '',
  'Experiments (`--modes bt-offset` or `bt-rarest`), not the product: the same fetcher with the order',
  'in which its torrent picks pieces changed from inside the worker (`images-node.ts --strategy`).',
  'The fetcher then kept webtorrent\'s default, sequential from piece 0 (it now starts at a random piece); `offset` is sequential from a',
  'random piece of each node\'s, `rarest` is webtorrent\'s rarest-first strategy.',
].join('\n');

// ---- main --------------------------------------------------------------------------------------
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: it makes network namespaces and shapes links with tc');
  if (!existsSync(REGISTRY_MAIN) || !existsSync(join(ROOT, 'apps/agent/dist/images/fetch.js'))) throw new Error('build first: npx tsc -b apps/agent apps/registry');
  tmp = mkdtempSync(join(tmpdir(), 'pl-bimg-'));
  const imagesDir = join(tmp, 'images');
  mkdirSync(imagesDir);
  const startedAt = new Date();
  const loadAtStart = loadavg();

  progress(`images bench: ${SIZE / MiB} MiB image, every link ${RATE_MBIT} Mbit/s, N = ${NS.join(', ')}, ${MODES.join(' and ')}, ${ROUNDS} round(s)`);
  const archive = join(tmp, 'archive.tar');
  const sha256 = makeArchive(archive);
  pg = await startPostgres();
  const dbUrl = await pg.createDatabase('bimg');
  await buildNetwork();
  await startRegistry(dbUrl, imagesDir);

  const runs: Run[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const n of NS) {
      for (const mode of MODES) {
        // A new name is a new infohash: a swarm nobody has joined yet. Same bytes, same sha256.
        const image = await publish(`bimg-r${round}-n${n}-${mode}`, archive, sha256);
        if (mode !== 'http' && !image.magnet) throw new Error(`the registry published ${image.name} without a magnet link`);
        progress(`round ${round}, ${MODE_NAME[mode]}, N = ${n}: ${image.name} (infohash ${image.infohash})`);
        const r = await runOnce(n, mode, round, image);
        runs.push(r);
        const per = r.nodes.map((x) => x.seconds.toFixed(1)).join(' ');
        progress(`  → ${r.seconds.toFixed(1)} s (per node ${per}); registry sent ${(r.registrySent / SIZE).toFixed(2)} × the image, ` +
          `nodes ${(r.nodesSent / SIZE).toFixed(2)} ×; CPU ${(r.cpuBusy * 100).toFixed(0)} % of ${cpus().length} cores, registry ${r.registryCpu.toFixed(1)} s` +
          (r.failures.length ? `; failures: ${r.failures.join('; ')}` : ''));
        if (args.verbose) progress(JSON.stringify(r.nodes));
      }
    }
  }
  const loadAtEnd = loadavg();

  // ---- the report ----
  const pick = (n: number, mode: Mode) => runs.filter((r) => r.n === n && r.mode === mode);
  const sec = (n: number, mode: Mode) => median(pick(n, mode).map((r) => r.seconds));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const ratio = (mode: Mode) => (NS.includes(1) && MODES.includes(mode) ? sec(MAX_N, mode) / sec(1, mode) : NaN);
  const ratios = MODES.map((mode) => ({ mode, r: ratio(mode) }));
  const gib = (b: number) => (b / SIZE).toFixed(2);
  const rows = NS.flatMap((n) => MODES.map((mode) => {
    const rs = pick(n, mode);
    const nodes = rs.flatMap((r) => r.nodes);
    const total = sum(nodes.map((x) => x.bytes_from_peers + x.bytes_from_registry + x.bytes_from_webseed)) || 1;
    const share = (f: (x: NodeResult) => number) => `${Math.round((100 * sum(nodes.map(f))) / total)} %`;
    const times = nodes.map((x) => x.seconds);
    return `| ${MODE_NAME[mode]} | ${n} | **${sec(n, mode).toFixed(1)}** | ${Math.min(...times).toFixed(1)} | ${(sec(n, mode) / sec(1, mode)).toFixed(2)} | ` +
      `${mode !== 'http' ? `${share((x) => x.bytes_from_peers)} / ${share((x) => x.bytes_from_registry)} / ${share((x) => x.bytes_from_webseed)}` : `– / – / ${share((x) => x.bytes_from_webseed)}`} | ` +
      `${gib(median(rs.map((r) => r.registrySent)))} | ${gib(median(rs.map((r) => r.nodesSent)))} | ${Math.round(100 * median(rs.map((r) => r.cpuBusy)))} % | ` +
      `${(sum(nodes.map((x) => x.cpu_seconds)) / nodes.length).toFixed(1)} | ${median(rs.map((r) => r.registryCpu)).toFixed(1)} | ${Math.max(...rs.map((r) => r.load)).toFixed(1)} |`;
  }));
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  const kernel = execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim();
  const fellBack = runs.flatMap((r) => r.nodes.filter((x) => x.fell_back_to_http).map(() => `${MODE_NAME[r.mode]} N=${r.n}`));
  const failures = runs.flatMap((r) => r.failures.map((f) => `${MODE_NAME[r.mode]} N=${r.n}: ${f}`));
  const rate = `${RATE_MBIT} Mbit/s`;
  const svgPath = args.svg ? resolve(ROOT, args.svg) : null;
  const command = `node scripts/bench/images.ts --size-mib ${SIZE / MiB} --rate-mbit ${RATE_MBIT} --nodes ${NS.join(',')} --modes ${MODES.join(',')}` +
    `${ROUNDS > 1 ? ` --rounds ${ROUNDS}` : ''}${args['seed-upload-kbps'] ? ` --seed-upload-kbps ${args['seed-upload-kbps']}` : ''}${args.write ? ` --write ${args.write}` : ''}`;
  const text = [
    `### Image distribution — ${startedAt.toISOString().slice(0, 10)}`,
    '',
    `Machine: ${cpus().length} cores (${cpu}), ${Math.round(totalmem() / 2 ** 30)} GiB, kernel ${kernel}, Node ${process.version}. ` +
      `Load average (1/5/15 min) ${loadAtStart.map((l) => l.toFixed(2)).join(' / ')} at the start, ${loadAtEnd.map((l) => l.toFixed(2)).join(' / ')} at the end ` +
      `(${startedAt.toISOString().slice(11, 16)}–${new Date().toISOString().slice(11, 16)} UTC).`,
    `Command: \`${command}\`. One image of ${SIZE / MiB} MiB of random bytes; every link ${rate} each way (tbf); ` +
      `${ROUNDS > 1 ? `the median of ${ROUNDS} rounds` : 'one round'}, the runs interleaved (N = 1 in each mode, then N = 2 …).`,
    '',
    `| mode | N | last node (s) | first node (s) | × own N = 1 | bytes from peers / registry seeder / web seed | registry sent (× image) | nodes sent (× image) | CPU busy (${cpus().length} cores) | CPU s per node | registry CPU (s) | load (1 min) |`,
    '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|',
    ...rows,
    '',
    `${ratios.map(({ mode, r }) => `${MODE_NAME[mode]}: N = ${MAX_N} / N = 1 = **${r.toFixed(2)}**${mode === 'http' ? '' : ` (target ≤ 1.5: ${r <= 1.5 ? 'met' : 'not met'})`}`).join('; ')}. ` +
      `At ${rate} the image takes ${((SIZE * 8) / (RATE_MBIT * 1e6)).toFixed(1)} s on one link at full rate.`,
    ...(fellBack.length ? ['', `Nodes that got no torrent metadata within 20 s and fetched over plain HTTP instead: ${fellBack.join(', ')}.`] : []),
    ...(failures.length ? ['', `Failed attempts (the fetcher retried): ${failures.join('; ')}.`] : []),
    '',
    ...(svgPath ? [`![Seconds until the last of N nodes has the image, BitTorrent against HTTP only](${relative(dirname(resolve(ROOT, args.write ?? 'docs/benchmarks.md')), svgPath)})`, ''] : []),
  ].join('\n');
  process.stdout.write(`${text}\n`);
  if (svgPath) {
    plot(runs, SIZE, RATE_MBIT, startedAt, svgPath);
    progress(`wrote ${args.svg}`);
  }
  if (args.write) {
    // The section's heading and what it measures, the first time only; later runs add a dated part.
    appendResults(args.write, text, `${SECTION}\n\n${ABOUT}`);
    progress(`appended to ${args.write}`);
  }
  if (args.json) writeFileSync(args.json, JSON.stringify({ startedAt, size: SIZE, rateMbit: RATE_MBIT, loadAtStart, loadAtEnd, runs }, null, 1));
}

try {
  if (args.replot) {
    // Only the chart again, from the figures of an earlier run (--json).
    const saved = JSON.parse(readFileSync(args.replot, 'utf8')) as { startedAt: string; size: number; rateMbit: number; runs: Run[] };
    plot(saved.runs, saved.size, saved.rateMbit, new Date(saved.startedAt), resolve(ROOT, args.svg ?? 'docs/bench/images.svg'));
  } else {
    await main();
  }
} catch (err) {
  process.stderr.write(`images bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
} finally {
  // The registry first (it holds database connections), then PostgreSQL, then the rest.
  const reg = registry as ChildProcess | null;
  if (reg && reg.exitCode === null) {
    reg.kill('SIGTERM');
    await Promise.race([new Promise((r) => reg.once('exit', r)), sleep(10_000)]);
  }
  await (pg as PostgresServer | null)?.stop().catch(() => {});
  cleanupSync();
}
