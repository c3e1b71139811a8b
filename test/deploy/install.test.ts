// The release bundle and its installers, up to running daemons (no systemd here): build the
// bundle, install a registry and a node each into a temp root (--root), start the installed
// registry and agent as their units would, build a sliver with the bundled agent, upgrade the
// node in place (same identity, the sliver's init untouched across the agent's restart), then
// uninstall both and find nothing left: no file in either root, mount, loop device, nftables
// table or container.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PlanetLiteClient, trustRegistry } from '@planetlite/api';
import { createTestDatabase, freePort } from '../harness/services.ts';
import { makeNodeNamespace, removeNode } from '../harness/node.ts';
import { until } from '../harness/testbed.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const tag = Math.random().toString(36).slice(2, 7);
const octet = 90 + Math.floor(Math.random() * 5);
const ns = `pl-instnode-${tag}`;
const net = `pl-instnet-${tag}`;
const ADDRESS = `198.18.${octet}.1`;
const SUBNET = `10.${90 + (octet % 5)}.0.0/24`;
const ADMIN = { email: 'admin@install.test', password: 'install-admin-password' };

let tmp: string;
let bundle: string;
let regRoot: string;
let nodeRoot: string;
let stateDir: string;
let registry: ChildProcess | null = null;
let agent: ChildProcess | null = null;
let url: string;
let admin: PlanetLiteClient;
let nodeId: string;
let sliverId: string;

// Async: a worker blocked for long misses vitest's RPC deadline.
const exec = promisify(execFile);
const sh = async (script: string, args: string[]) => (await exec('bash', [join(bundle, script), ...args], { encoding: 'utf8', timeout: 120_000 })).stdout;
const envFile = (file: string) =>
  Object.fromEntries(readFileSync(file, 'utf8').split('\n').filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
const files = (dir: string) => execFileSync('find', [dir, '-mindepth', '1'], { encoding: 'utf8' }).split('\n').filter(Boolean);
const lxcInit = (id: string) =>
  execFileSync('nsenter', [`--net=/run/netns/${ns}`, 'lxc-info', '-P', join(stateDir, 'lxc'), '-n', `sl-${id}`, '-pH'], { encoding: 'utf8' }).trim();

async function stopProcess(p: ChildProcess | null): Promise<void> {
  if (!p || p.exitCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 30_000))]);
  if (p.exitCode === null) p.kill('SIGKILL');
}

/** Starts the installed agent as its unit does (ExecStart plus the env file's flags), in the
 * test's node namespace. */
function startAgent(): ChildProcess {
  const extra = envFile(join(nodeRoot, 'etc/planetlite/agent.env')).PLANETLITE_AGENT_ARGS!.split(' ').filter(Boolean);
  const p = spawn(join(nodeRoot, 'opt/planetlite/current/bin/planetlite-agent'), ['run', '--state-dir', stateDir, ...extra, '--netns', ns, '--vm', 'off', '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  return p;
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'pl-install-'));
  chmodSync(tmp, 0o711); // unprivileged slivers traverse it to their lxcpath
  regRoot = join(tmp, 'registry-root');
  nodeRoot = join(tmp, 'node-root');
  stateDir = join(nodeRoot, 'var/lib/planetlite-agent');
  mkdirSync(regRoot);
  mkdirSync(nodeRoot);
  const t0 = performance.now();
  const tarball = (await exec('bash', [join(ROOT, 'scripts/release.sh'), '--out', join(tmp, 'out')], { encoding: 'utf8', timeout: 300_000 })).stdout.trim().split('\n').at(-1)!;
  console.log(`release bundle: ${Math.round(performance.now() - t0)} ms, ${(statSync(tarball).size / 2 ** 20).toFixed(1)} MiB`);
  await exec('tar', ['-xzf', tarball, '-C', tmp]);
  bundle = join(tmp, readdirSync(tmp).find((d) => d.startsWith('planetlite-'))!);
  await makeNodeNamespace({ ns, peerNs: net, octet, link: `pi${tag}` });
}, 360_000);

afterAll(async () => {
  await stopProcess(agent);
  await stopProcess(registry);
  await removeNode({ stateDir, ns, peerNs: net, poolFile: join(stateDir, 'pool.img') });
  rmSync(tmp, { recursive: true, force: true });
}, 120_000);

describe('installing from the release bundle', () => {
  it('bundles a pinned Node 24 that runs the three programs', () => {
    expect(execFileSync(join(bundle, 'node/bin/node'), ['--version'], { encoding: 'utf8' }).trim()).toMatch(/^v24\.\d+\.\d+$/);
    expect(readFileSync(join(bundle, 'VERSION'), 'utf8')).toMatch(/^0\.1\.0\+\w+\nnode 24\.\d+\.\d+\n$/);
    for (const p of ['planetlite-agent', 'planetlite-registry', 'planetlite']) {
      const r = spawnSync(join(bundle, 'bin', p), ['--help'], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
    }
  });

  it('installs a registry that starts as its unit would, as a run of the installed program', async () => {
    const pwFile = join(tmp, 'admin-password');
    writeFileSync(pwFile, `${ADMIN.password}\n`);
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    const out = await sh('install-registry.sh', ['--root', regRoot, '--public-url', url, '--listen', `127.0.0.1:${port}`, '--admin-email', ADMIN.email, '--admin-password-file', pwFile,
      '--database-url', await createTestDatabase(inject('pgUrl'), 'install'), '--redis-url', inject('redisUrl')]);
    expect(out).toMatch(/registry installed/);
    const env = join(regRoot, 'etc/planetlite/registry.env');
    expect(statSync(env).mode & 0o777).toBe(0o640);
    const unit = join(regRoot, 'etc/systemd/system/planetlite-registry.service');
    const verify = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    expect(verify.stderr).toBe('');
    expect(verify.status).toBe(0);
    const exec = /^ExecStart=(.*)$/m.exec(readFileSync(unit, 'utf8'))![1]!.split(' ');
    registry = spawn(exec[0]!, exec.slice(1), { env: { ...process.env, ...envFile(env), PLANETLITE_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'ignore', 'inherit'] });
    // The registry made its own CA on its first start; its admin, on that machine, trusts it.
    const caFile = join(regRoot, 'var/lib/planetlite-registry/tls/ca.pem');
    await until('the installed registry to make its CA', async () => existsSync(caFile), 30_000);
    trustRegistry(url, readFileSync(caFile, 'utf8'));
    await until('the installed registry to answer', async () => (await fetch(`${url}/healthz`).catch(() => null))?.ok, 30_000);
    admin = new PlanetLiteClient({ registry: url });
    await admin.login(ADMIN.email, ADMIN.password);
    await admin.createSite({ login_base: 'inst', name: 'install', max_slices: 2, max_slivers: 2 });
  }, 120_000);

  it('installs a node: agent, unit, subordinate ids, enrolled with the pasted token', async () => {
    const { token, ca_pin: caPin, registry } = await admin.createEnrollmentToken('inst');
    expect(registry).toBe(url);
    expect(caPin).toMatch(/^sha256:[0-9a-f]{64}$/);
    // What a developer's setup keeps there (scripts/lib.sh: /opt/planetlite/node24) is not the installer's.
    mkdirSync(join(nodeRoot, 'opt/planetlite/node24'), { recursive: true });
    writeFileSync(join(nodeRoot, 'opt/planetlite/node24/marker'), 'not ours\n');
    const out = await sh('install-node.sh', ['--root', nodeRoot, '--registry', url, '--token', token, '--ca-pin', caPin!, '--address', ADDRESS, '--hostname', `node.${tag}.test`, '--pool-size', '1G', '--sliver-subnet', SUBNET]);
    expect(out).toMatch(/enrolled node\.\w+\.test as node/);
    const enrolled = JSON.parse(readFileSync(join(stateDir, 'node.json'), 'utf8')) as { node_id: string; ca_pin: string };
    nodeId = enrolled.node_id;
    expect(enrolled.ca_pin).toBe(caPin);
    // 64 slivers in a /24 plus the probe's block.
    for (const f of ['subuid', 'subgid']) expect(readFileSync(join(nodeRoot, 'etc', f), 'utf8')).toBe(`root:1000000:${65 * 65536}\n`);
    const unit = join(nodeRoot, 'etc/systemd/system/planetlite-agent.service');
    const verify = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    expect(verify.stderr).toBe('');
    expect(readFileSync(unit, 'utf8')).toContain(`ExecStart=${nodeRoot}/opt/planetlite/current/bin/planetlite-agent run --state-dir ${stateDir} $PLANETLITE_AGENT_ARGS`);
    const help = execFileSync(join(nodeRoot, 'opt/planetlite/current/bin/planetlite-agent'), ['--help'], { encoding: 'utf8' });
    expect(help).toMatch(/release \[options\]/);
  }, 120_000);

  it('the installed agent runs: the node comes online and builds a sliver', async () => {
    const image = join(tmp, 'tiny.tar');
    execFileSync('bash', [join(ROOT, 'infra/images/tiny/build.sh'), image], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
    execFileSync(join(nodeRoot, 'opt/planetlite/current/bin/planetlite-agent'), ['image', 'import', 'tiny', image, '--state-dir', stateDir, '--pool-size', '1G'], { stdio: ['ignore', 'ignore', 'pipe'] });
    agent = startAgent();
    // Enrolled, a node claims no sliver kind; its agent's first report says what its drivers run.
    await until('the node to report that it runs LXC slivers', async () => (await admin.getNode(nodeId)).capabilities.lxc, 60_000);
    await admin.createSlice({ name: 'inst_one', description: 'install e2e', url: 'https://example.org', image: 'tiny' });
    sliverId = (await admin.createSliver('inst_one', nodeId)).id;
    await until('the sliver to run', async () => {
      const s = await admin.getSliver(sliverId);
      if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
      return s.state === 'running';
    }, 120_000);
    expect(readFileSync(join(stateDir, 'agent.pid'), 'utf8').trim()).toBe(String(agent.pid));
    // The front door is its own bundled program (lib/front-door.mjs): it listens and is published.
    await until("the node's front door to be published", async () => (await admin.getNode(nodeId)).front_door !== null, 60_000);
    const refused = spawnSync(join(nodeRoot, 'opt/planetlite/current/bin/planetlite-agent'), ['release', '--state-dir', stateDir], { encoding: 'utf8' });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toBe(`planetlite-agent: the agent is running on ${stateDir} (pid ${agent.pid}); stop it first (systemctl stop planetlite-agent)\n`);
  }, 240_000);

  it('run again, it upgrades in place: same identity, and the sliver lives through the restart', async () => {
    const identity = readFileSync(join(stateDir, 'node.json'), 'utf8');
    const init = lxcInit(sliverId);
    await stopProcess(agent);
    expect(agent!.exitCode).toBe(0);
    const out = await sh('install-node.sh', ['--root', nodeRoot]);
    expect(out).toMatch(/already enrolled: node\.\w+\.test keeps its identity/);
    expect(readFileSync(join(stateDir, 'node.json'), 'utf8')).toBe(identity);
    for (const f of ['subuid', 'subgid']) expect(readFileSync(join(nodeRoot, 'etc', f), 'utf8')).toBe(`root:1000000:${65 * 65536}\n`);
    const before = (await admin.getNode(nodeId)).last_seen;
    agent = startAgent();
    await until('a report from the upgraded agent', async () => (await admin.getNode(nodeId)).last_seen !== before, 60_000);
    expect(lxcInit(sliverId)).toBe(init);
    expect((await admin.getSliver(sliverId)).state).toBe('running');
  }, 180_000);

  it('uninstall --keep-data keeps the node and its sliver for a later install', async () => {
    await stopProcess(agent);
    const out = await sh('uninstall.sh', ['--root', nodeRoot, '--node', '--keep-data']);
    expect(out).toMatch(/released: 1 sliver\(s\) stopped/);
    expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(nodeRoot);
    expect(files(join(nodeRoot, 'opt/planetlite'))).toEqual([join(nodeRoot, 'opt/planetlite/node24'), join(nodeRoot, 'opt/planetlite/node24/marker')]);
    expect(existsSync(join(stateDir, 'pool.img'))).toBe(true);
    expect(await sh('install-node.sh', ['--root', nodeRoot])).toMatch(/keeps its identity/);
    agent = startAgent();
    await until('the sliver built again from the kept pool', async () => (await admin.getSliver(sliverId)).state === 'running' && lxcInit(sliverId) !== '', 90_000);
  }, 180_000);

  it('uninstall leaves nothing of the node or the registry', async () => {
    await stopProcess(agent);
    const out = await sh('uninstall.sh', ['--root', nodeRoot]);
    expect(out).toMatch(/released: 1 sliver\(s\) stopped/);
    expect(files(nodeRoot)).toEqual([join(nodeRoot, 'opt'), join(nodeRoot, 'opt/planetlite'), join(nodeRoot, 'opt/planetlite/node24'), join(nodeRoot, 'opt/planetlite/node24/marker')]);
    rmSync(join(nodeRoot, 'opt'), { recursive: true });
    expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(nodeRoot);
    expect(execFileSync('losetup', ['-j', join(stateDir, 'pool.img')], { encoding: 'utf8' })).toBe('');
    expect(execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'], { encoding: 'utf8' })).not.toMatch(/planetlite/);
    await stopProcess(registry);
    await sh('uninstall.sh', ['--root', regRoot]);
    expect(files(regRoot)).toEqual([]);
  }, 120_000);
});
