// End to end on one node: a real registry, a real agent with a btrfs pool on a loop file, LXC
// and nftables inside a network namespace that stands for the node, and an experimenter in
// another namespace who sshes through the forwarded port into the sliver.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PlanetLiteClient, type Sliver } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { run } from '@planetlite/host';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { Agent, enroll, importImage } from '@planetlite/agent';
import { makeNodeNamespace, removeNode } from '../harness/node.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADMIN = { email: 'admin@e2e.test', password: 'e2e-admin-password' };
const tag = Math.random().toString(36).slice(2, 7);
const NODE = `pl-node-${tag}`;
const NET = `pl-net-${tag}`;
const octet = 100 + Math.floor(Math.random() * 100);
const PUBLIC = `198.18.${octet}.1`;
const log = createLogger({ name: 'e2e', level: process.env.PLANETLITE_E2E_LOG ?? 'silent' });

let dir: string;
let registry: RunningRegistry;
let admin: PlanetLiteClient;
let agent: Agent | null = null;
let key: string;
let nodeId: string;

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function sshFromNet(port: number, user: string, command: string, identity = key): string {
  return execFileSync('ip', [
    'netns', 'exec', NET, 'ssh', '-i', identity, '-p', String(port),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
    `${user}@${PUBLIC}`, command,
  ], { encoding: 'utf8', timeout: 20_000 }).trim();
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pl-e2e-'));
  chmodSync(dir, 0o711); // unprivileged slivers traverse it to their lxcpath
  // The node and the experimenter, joined by one link; the node's end is its public address.
  await makeNodeNamespace({ ns: NODE, peerNs: NET, octet, link: `pv${tag}` });

  registry = await startRegistry({ listen: '127.0.0.1:0', adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false });
  admin = new PlanetLiteClient({ registry: registry.url });
  await admin.login(ADMIN.email, ADMIN.password);
  await admin.createSite({ login_base: 'e2e', name: 'E2E', max_slices: 5, max_slivers: 5 });
  key = join(dir, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'experimenter', '-f', key]);
  await admin.addKey((await admin.me()).id, readFileSync(`${key}.pub`, 'utf8'));

  const stateDir = join(dir, 'agent');
  const token = (await admin.createEnrollmentToken('e2e')).token;
  const e = await enroll({ registry: registry.url, token, address: PUBLIC, hostname: `node.${tag}.test`, stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null } });
  nodeId = e.node_id;
  const settings = { pool: join(dir, 'pool.img'), pool_size: '2G', sliver_subnet: `10.${200 + (octet % 50)}.0.0/24`, netns: NODE };
  const image = join(dir, 'tiny.tar');
  execFileSync('bash', [join(ROOT, 'infra/images/tiny/build.sh'), image]);
  await importImage({ stateDir, name: 'tiny', file: image, settings });
  agent = new Agent({ stateDir, log, settings, waitSeconds: 30, reportEveryMs: 2000 });
  await agent.start();
}, 180_000);

afterAll(async () => {
  await agent?.stop();
  // Whatever a failure left: slivers, devices, the table, the pool.
  await removeNode({ stateDir: join(dir, 'agent'), ns: NODE, peerNs: NET, poolFile: join(dir, 'pool.img') });
  await registry?.close();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('a sliver on one node', () => {
  let sliver: Sliver;

  it('is created through the API and reaches running', async () => {
    await admin.createSlice({ name: 'e2e_hello', description: 'end to end', url: 'https://example.org', image: 'tiny' });
    sliver = await admin.createSliver('e2e_hello', nodeId);
    const running = await until('the sliver to run', async () => {
      const s = await admin.getSliver(sliver.id);
      if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
      return s.state === 'running' ? s : null;
    });
    expect(running.address).toMatch(/^10\./);
    expect(running.ssh).toEqual({ host: PUBLIC, port: running.ports.first, user: 'e2e_hello' });
  }, 120_000);

  it('answers ssh -p PORT SLICE@NODE from the experimenter, as the slice user, with /etc/slicename', async () => {
    const out = await until('ssh to answer', async () => sshFromNet(sliver.ports.first, 'e2e_hello', 'cat /etc/slicename; id -un'), 30_000);
    expect(out.split('\n')).toEqual(['e2e_hello', 'e2e_hello']);
    expect(sshFromNet(sliver.ports.first, 'root', 'id -u')).toBe('0');
  }, 60_000);

  it('answers an ssh2 client too', async () => {
    // ssh2 runs in the experimenter's namespace, the only place that reaches the node's address.
    const script = `
      const { Client } = require(${JSON.stringify(join(ROOT, 'node_modules/ssh2'))});
      const c = new Client();
      c.on('ready', () => c.exec('cat /etc/slicename', (err, stream) => {
        if (err) throw err;
        let out = '';
        stream.on('data', (d) => (out += d)).on('close', () => { process.stdout.write(out); c.end(); });
      }));
      c.on('error', (e) => { console.error(e.message); process.exit(1); });
      c.connect({ host: ${JSON.stringify(PUBLIC)}, port: ${sliver.ports.first}, username: 'e2e_hello', privateKey: require('fs').readFileSync(${JSON.stringify(key)}), readyTimeout: 10000 });
    `;
    const out = execFileSync('ip', ['netns', 'exec', NET, process.execPath, '-e', script], { encoding: 'utf8', timeout: 20_000 });
    expect(out.trim()).toBe('e2e_hello');
  }, 60_000);

  it('takes a new member key while it runs', async () => {
    const second = join(dir, 'second_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'second', '-f', second]);
    await admin.addKey((await admin.me()).id, readFileSync(`${second}.pub`, 'utf8'));
    const out = await until('the new key to work', async () => sshFromNet(sliver.ports.first, 'e2e_hello', 'cat /etc/slicename', second), 30_000);
    expect(out).toBe('e2e_hello');
  }, 60_000);

  it('takes new resource limits while it runs, without a restart', async () => {
    const probe = () => sshFromNet(sliver.ports.first, 'root', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares; cut -d" " -f22 /proc/1/stat');
    const [memBefore, , initBefore] = probe().split('\n');
    expect(Number(memBefore)).toBe((await admin.getSlice('e2e_hello')).resources.memory_mb * 1024 * 1024);
    const slice = await admin.updateSlice('e2e_hello', { resources: { memory_mb: 96, cpu_shares: 300 } });
    expect(slice.resources).toMatchObject({ memory_mb: 96, cpu_shares: 300 });
    const after = await until('the new limits inside the sliver', async () => {
      const lines = probe().split('\n');
      return lines[0] === String(96 * 1024 * 1024) && lines[1] === '300' ? lines : null;
    }, 30_000);
    expect(after[2]).toBe(initBefore); // the same init: not restarted
  }, 60_000);

  it('keeps running while its agent is away, and a restarted agent tears down what was deleted meanwhile', async () => {
    await agent!.stop();
    agent = null;
    expect(sshFromNet(sliver.ports.first, 'e2e_hello', 'cat /etc/slicename')).toBe('e2e_hello');
    await admin.deleteSliver(sliver.id);
    expect((await admin.getSliver(sliver.id)).state).toBe('deleting');

    agent = new Agent({ stateDir: join(dir, 'agent'), log, settings: { netns: NODE }, waitSeconds: 30, reportEveryMs: 2000 });
    await agent.start();
    await until('the registry to forget the sliver', async () => (await admin.getSliver(sliver.id).then(() => false, () => true)));
    const lxc = await run('lxc-ls', ['-P', join(dir, 'agent', 'lxc')]);
    expect(lxc.stdout.trim()).toBe('');
    const links = await run('ip', ['-n', NODE, '-o', 'link']);
    expect(links.stdout).not.toMatch(/plh|pls/);
    const table = await run('ip', ['netns', 'exec', NODE, 'nft', 'list', 'table', 'inet', 'planetlite']);
    expect(table.stdout).not.toMatch(/sliver_[0-9a-f]{8}-/);
    expect(readdirSync(join(dir, 'agent', 'pool', 'slivers'))).toEqual([]);
  }, 120_000);
});
