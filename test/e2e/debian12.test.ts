// The Debian 12 image end to end: built from its recipe (debootstrap from this machine's
// configured Debian mirror), imported on a node, run as a slice's sliver through the registry
// and the agent, reached with ssh through the forwarded port, and deleted without a trace.
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
const NODE = `pl-dnode-${tag}`;
const NET = `pl-dnet-${tag}`;
const octet = 20 + Math.floor(Math.random() * 70);
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
  dir = mkdtempSync(join(tmpdir(), 'pl-deb12-e2e-'));
  chmodSync(dir, 0o711); // unprivileged slivers traverse it to their lxcpath
  // The node and the experimenter, joined by one link; the node's end is its public address.
  await makeNodeNamespace({ ns: NODE, peerNs: NET, octet, link: `pv${tag}` });

  registry = await startRegistry({ listen: '127.0.0.1:0', adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false });
  admin = new PlanetLiteClient({ registry: registry.url });
  await admin.login(ADMIN.email, ADMIN.password);
  await admin.createSite({ login_base: 'deb', name: 'Debian', max_slices: 5, max_slivers: 5 });
  key = join(dir, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'experimenter', '-f', key]);
  await admin.addKey((await admin.me()).id, readFileSync(`${key}.pub`, 'utf8'));

  const stateDir = join(dir, 'agent');
  const token = (await admin.createEnrollmentToken('deb')).token;
  const e = await enroll({ registry: registry.url, token, address: PUBLIC, hostname: `node.${tag}.test`, stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null } });
  nodeId = e.node_id;
  const settings = { pool: join(dir, 'pool.img'), pool_size: '2G', sliver_subnet: `10.${150 + (octet % 50)}.0.0/24`, netns: NODE };
  const image = join(dir, 'debian12.tar.zst');
  execFileSync('bash', [join(ROOT, 'infra/images/debian12/build.sh'), image], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 900_000 });
  await importImage({ stateDir, name: 'debian12', file: image, settings });
  agent = new Agent({ stateDir, log, settings, waitSeconds: 30, reportEveryMs: 2000 });
  await agent.start();
}, 960_000);

afterAll(async () => {
  await agent?.stop();
  // Whatever a failure left: slivers, devices, the table, the pool.
  await removeNode({ stateDir: join(dir, 'agent'), ns: NODE, peerNs: NET, poolFile: join(dir, 'pool.img') });
  await registry?.close();
  rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('the debian12 image as a sliver', () => {
  let sliver: Sliver;

  it('boots through the registry and the agent', async () => {
    await admin.createSlice({ name: 'deb_hello', description: 'Debian 12 end to end', url: 'https://example.org', image: 'debian12' });
    sliver = await admin.createSliver('deb_hello', nodeId);
    await until('the sliver to run', async () => {
      const s = await admin.getSliver(sliver.id);
      if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
      return s.state === 'running';
    });
  }, 120_000);

  it('is Debian 12 with its own sshd, no systemd, the slice user and /etc/slicename', async () => {
    const out = await until('ssh to answer', async () => sshFromNet(sliver.ports.first, 'deb_hello', 'cat /etc/slicename /etc/debian_version; id -un; hostname; test -e /usr/lib/systemd/systemd && echo systemd || echo no-systemd'), 60_000);
    const [slicename, version, user, hostname, systemd] = out.split('\n');
    expect(slicename).toBe('deb_hello');
    expect(version).toMatch(/^12\.\d+$/);
    expect([user, hostname, systemd]).toEqual(['deb_hello', 'deb_hello', 'no-systemd']);
    // Root has the members' keys too, and Debian's own tools.
    expect(sshFromNet(sliver.ports.first, 'root', "id -u; dpkg-query -W -f='${Status}' openssh-server")).toBe('0\ninstall ok installed');
    // Its host key is the one the node wrote for this sliver, not one baked into the image.
    expect(sshFromNet(sliver.ports.first, 'root', 'cut -d" " -f3 /etc/ssh/ssh_host_ed25519_key.pub')).toBe('sliver');
  }, 90_000);

  it('is deleted without a trace', async () => {
    await admin.deleteSliver(sliver.id);
    await until('the registry to forget the sliver', async () => (await admin.getSliver(sliver.id).then(() => false, () => true)));
    expect((await run('lxc-ls', ['-P', join(dir, 'agent', 'lxc')])).stdout.trim()).toBe('');
    expect((await run('ip', ['-n', NODE, '-o', 'link'])).stdout).not.toMatch(/plh|pls/);
    expect(readdirSync(join(dir, 'agent', 'pool', 'slivers'))).toEqual([]);
  }, 120_000);
});
