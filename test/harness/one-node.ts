// One node end to end, as the single-node e2e files use it: a real registry (in process), a real
// agent with a btrfs pool on a loop file, LXC and nftables inside a network namespace that stands
// for the node, and an experimenter namespace joined to it, from which ssh reaches the slivers.
// Each file picks its own names, address range and sliver subnets so the files can run side by side.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PlanetLiteClient, trustRegistry, type Sliver } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { tryRun } from '@planetlite/host';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { Agent, enroll, importImage, type SettingsOverrides } from '@planetlite/agent';
import { makeNodeNamespace, removeNode } from './node.ts';

import { until } from './testbed.ts';

export { until };

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const log = createLogger({ name: 'e2e', level: process.env.PLANETLITE_E2E_LOG ?? 'silent' });

export interface OneNodeOptions {
  /** The site's login_base; also names the namespaces (pl-<site>node-TAG, pl-<site>net-TAG). */
  site: string;
  /** The node's public address is 198.18.<octet>.1, octet drawn from [first, first + count). */
  octets: [first: number, count: number];
  /** The node's sliver subnet for the octet drawn, e.g. (o) => `10.${200 + (o % 50)}.0.0/24`. */
  sliverSubnet: (octet: number) => string;
  /** The image slices name: its recipe in infra/images/<name>/build.sh and the archive's suffix. */
  image: { name: 'tiny' | 'debian12'; file: string };
  maxSlivers?: number;
  /** Agent settings beyond the pool and namespace (e.g. the watchdog's). VM slivers are off
   * unless this says vm: 'auto' (their check boots a probe guest: seconds of CPU). */
  agentSettings?: SettingsOverrides;
}

export interface OneNode {
  readonly tag: string;
  readonly dir: string;
  readonly stateDir: string;
  readonly ns: string;
  readonly net: string;
  readonly publicAddress: string;
  readonly registry: RunningRegistry;
  readonly admin: PlanetLiteClient;
  readonly nodeId: string;
  /** The experimenter's private key (its public half is the admin's key). */
  readonly key: string;
  agent: Agent | null;
  /** `ssh -p PORT USER@NODE COMMAND` from the experimenter's namespace; the trimmed output. */
  ssh(port: number, user: string, command: string, identity?: string): string;
  /** The same without blocking this process: the in-process agent keeps working meanwhile. */
  sshAsync(port: number, user: string, command: string, identity?: string): Promise<string>;
  /** Starts an agent on the node's state dir (the settings are remembered there); `settings`
   * override the node's agentSettings for this agent. */
  startAgent(settings?: SettingsOverrides): Promise<Agent>;
  stopAgent(): Promise<void>;
  /** Creates the slice (of the node's image) and a sliver of it here; resolves once it runs and answers ssh. */
  runningSliver(slice: string): Promise<Sliver>;
  /** Removes everything, also what a failure left: slivers, devices, the table, the pool. */
  close(): Promise<void>;
}

export async function startOneNode(opts: OneNodeOptions): Promise<OneNode> {
  const tag = Math.random().toString(36).slice(2, 7);
  const sshArgs = (port: number, user: string, command: string, identity: string) => [
    'netns', 'exec', net, 'ssh', '-i', identity, '-p', String(port),
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
    `${user}@${publicAddress}`, command,
  ];
  const octet = opts.octets[0] + Math.floor(Math.random() * opts.octets[1]);
  const ns = `pl-${opts.site}node-${tag}`;
  const net = `pl-${opts.site}net-${tag}`;
  const publicAddress = `198.18.${octet}.1`;
  const dir = mkdtempSync(join(tmpdir(), `pl-${opts.site}-e2e-`));
  chmodSync(dir, 0o711); // unprivileged slivers traverse it to their lxcpath
  const stateDir = join(dir, 'agent');
  const key = join(dir, 'id_ed25519');
  const admin = { email: `admin@${opts.site}.test`, password: `${opts.site}-admin-password` };
  let registry: RunningRegistry | null = null;
  const settings = { pool: join(dir, 'pool.img'), pool_size: '2G', sliver_subnet: opts.sliverSubnet(octet), netns: ns };

  const node: Partial<OneNode> & { agent: Agent | null } = {
    tag, dir, stateDir, ns, net, publicAddress, key, agent: null,
    ssh(port, user, command, identity = key) {
      return execFileSync('ip', sshArgs(port, user, command, identity), { encoding: 'utf8', timeout: 30_000 }).trim();
    },
    async sshAsync(port, user, command, identity = key) {
      return (await promisify(execFile)('ip', sshArgs(port, user, command, identity), { encoding: 'utf8', timeout: 30_000 })).stdout.trim();
    },
    async startAgent(settings) {
      const agent = new Agent({ stateDir, log, settings: { vm: 'off', ...opts.agentSettings, ...settings, netns: ns }, waitSeconds: 30, reportEveryMs: 2000 });
      await agent.start();
      node.agent = agent;
      return agent;
    },
    async stopAgent() {
      await node.agent?.stop();
      node.agent = null;
    },
    async runningSliver(slice: string) {
      await node.admin!.createSlice({ name: slice, description: 'e2e', url: 'https://example.org', image: opts.image.name });
      const created = await node.admin!.createSliver(slice, node.nodeId!);
      const sliver = await until(`sliver ${created.id} of ${slice} to run`, async () => {
        const s = await node.admin!.getSliver(created.id);
        if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
        return s.state === 'running' ? s : null;
      }, 120_000);
      await until(`sliver ${created.id} to answer ssh`, async () => node.ssh!(sliver.ports.first, slice, 'cat /etc/slicename') === slice, 30_000).catch(async (err: Error) => {
        // A running sliver whose port is refused: say what the node had (its table's map entries, its containers).
        const [table, containers] = await Promise.all([
          tryRun('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'planetlite']).then((r) => r?.stdout ?? '(no table)'),
          tryRun('lxc-ls', ['-P', join(stateDir, 'lxc'), '-f']).then((r) => r?.stdout ?? '(lxc-ls failed)'),
        ]);
        throw new Error(`${err.message}\n--- the node then ---\nnftables:\n${table}\ncontainers:\n${containers}`);
      });
      return sliver;
    },
    async close() {
      await node.agent?.stop();
      await removeNode({ stateDir, ns, peerNs: net, poolFile: settings.pool });
      await registry?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    // The node and the experimenter, joined by one link; the node's end is its public address.
    await makeNodeNamespace({ ns, peerNs: net, octet, link: `pv${tag}` });
    registry = await startRegistry({ listen: '127.0.0.1:0', adminEmail: admin.email, adminPassword: admin.password, sweeps: false });
    trustRegistry(registry.url, registry.ca!);
    const client = new PlanetLiteClient({ registry: registry.url });
    await client.login(admin.email, admin.password);
    await client.createSite({ login_base: opts.site, name: opts.site, max_slices: 5, max_slivers: opts.maxSlivers ?? 5 });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'experimenter', '-f', key]);
    await client.addKey((await client.me()).id, readFileSync(`${key}.pub`, 'utf8'));

    const token = (await client.createEnrollmentToken(opts.site)).token;
    const e = await enroll({ registry: registry.url, token, caPin: registry.caPin!, address: publicAddress, hostname: `node.${tag}.test`, stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null } });
    const image = join(dir, opts.image.file);
    execFileSync('bash', [join(ROOT, `infra/images/${opts.image.name}/build.sh`), image], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 900_000 });
    await importImage({ stateDir, name: opts.image.name, file: image, settings });
    Object.assign(node, { registry, admin: client, nodeId: e.node_id });
    await node.startAgent!();
    return node as OneNode;
  } catch (err) {
    await node.close!();
    throw err;
  }
}
