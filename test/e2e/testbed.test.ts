// End to end on a testbed of three nodes. A shared "internet" (a bridge in a namespace of its
// own) joins three node namespaces and an experimenter namespace. The registry runs in this
// process on 127.0.0.1 with a PostgreSQL database of its own; nodes 1 and 2 run their agent in
// this process, node 3 runs `planetlite-agent run` as a separate process so that it can be
// SIGKILLed. Each node has its own state dir, btrfs pool, lxcpath and sliver subnet.
//
// - a slice with a sliver on every node: the experimenter sshes into each one;
// - two slices on one node cannot reach each other's private addresses nor the node's own
//   services, only the public forwarded ports;
// - node 3's agent is SIGKILLed at each step of building a sliver (the kill is sent from the
//   handler that reads the step's debug log line), restarted, and converges with nothing leaked
//   once the sliver is deleted;
// - the registry goes away: slivers keep answering ssh, agents keep running; it comes back on the
//   same port and database, and a change made then reaches the agents;
// - every slice is deleted: every node is clean and the registry forgets the slices;
// - node 3's agent is SIGKILLed in the middle of a teardown and of its own start-up probe, at
//   exact points: interposers for nft, lxc-start, lxc-stop and btrfs first on its PATH hold one
//   chosen call (the real tool runs afterwards, unchanged) so the kill lands just before it.
//
// Leftovers are looked for with sliverLeftovers (test/harness/node.ts): containers, links,
// nftables chains, pool subvolumes, ledger records and LXC cgroups. PLANETLITE_E2E_LOG=debug
// prints the agents' logs (node 3's on stderr, prefixed with its pid).
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcess } from 'node:child_process';
import { ApiError, PlanetLiteClient, caPinOf, trustRegistry, type Sliver } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { tryRun } from '@planetlite/host';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { Agent, enroll, importImage, readLedger } from '@planetlite/agent';
import { removeNode, sliverLeftovers } from '../harness/node.ts';
import { createTestDatabase } from '../harness/services.ts';
import { AgentProcess, AGENT_BIN, exec, joinInternet, makeInternet, removeInternet, removeLxcCgroups, sshFrom, until, type Internet, type LogRecord } from '../harness/testbed.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADMIN = { email: 'admin@testbed.test', password: 'testbed-admin-password' };
const tag = Math.random().toString(36).slice(2, 7).padEnd(5, '0');
// 198.18.10-99.0/24: apart from sliver.test.ts (100-199) and the demo (250), in case one of
// them puts its end of the link in this machine's own namespace.
const octet = 70 + Math.floor(Math.random() * 20);
const subnetBase = 150 + Math.floor(Math.random() * 50);
const LOG_LEVEL = process.env.PLANETLITE_E2E_LOG ?? 'silent';
const log = createLogger({ name: 'testbed', level: LOG_LEVEL });
const NODE_SERVICE_PORT = 19999;

interface TestNode {
  n: number;
  ns: string;
  address: string;
  stateDir: string;
  pool: string;
  subnet: string;
  id: string;
}

let dir: string;
let internet: Internet | null = null;
const EXP = `pl-exp-${tag}`;
const INET = `pl-inet-${tag}`;
let registry: RunningRegistry | null = null;
let registryPort: number;
let databaseUrl: string;
let admin: PlanetLiteClient;
let key: string;
const nodes: TestNode[] = [];
/** In-process agents of nodes 1 and 2. */
const agents = new Map<number, Agent>();
/** Node 3's agent process (the current one). */
let agent3: AgentProcess | null = null;
/** Every sliver this file created, for the final leak check. */
const created = new Set<string>();
let nodeService: ChildProcess | null = null;
/** Interposers for host tools of node 3's agent (see makeHolds). */
let holdDir: string;

const node = (n: number): TestNode => nodes[n - 1]!;

function registryOptions(listen: string) {
  // The data dir keeps the registry's CA, so the registry that comes back is the one nodes pinned.
  return { listen, databaseUrl, dataDir: join(dir, 'registry'), adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false, logLevel: LOG_LEVEL === 'silent' ? 'warn' : LOG_LEVEL };
}

/**
 * `planetlite-agent run` for node 3, with the flags `run` documents; debug log so tests can see
 * its steps. With holds, host tools are found first in the interposer dir (see makeHolds).
 */
function startAgent3(opts: { holds?: boolean } = {}): AgentProcess {
  const n = node(3);
  agent3 = new AgentProcess(
    ['run', '--state-dir', n.stateDir, '--pool', n.pool, '--pool-size', '1G', '--sliver-subnet', n.subnet, '--netns', n.ns, '--vm', 'off', '--log-level', 'debug'],
    { echo: LOG_LEVEL !== 'silent', ...(opts.holds ? { holds: true, env: { PATH: `${holdDir}:${process.env.PATH}` } } : {}) },
  );
  return agent3;
}

async function startedAgent3(opts: { holds?: boolean } = {}): Promise<AgentProcess> {
  const a = startAgent3(opts);
  await a.waitFor('agent running', (r) => r.msg === 'agent running', { ms: 60_000 });
  return a;
}

/** ssh -p PORT SLICE@NODE from the experimenter's namespace. */
function ssh(s: Pick<Sliver, 'ssh'>, command: string): Promise<string> {
  return sshFrom(EXP, { identity: key, host: s.ssh.host, port: s.ssh.port, user: s.ssh.user }, command);
}

async function sliverRunning(id: string, ms = 90_000): Promise<Sliver> {
  return explained(until(`sliver ${id} to run`, async () => {
    const s = await admin.getSliver(id);
    if (s.state === 'failed') throw new Error(`sliver ${id} failed: ${s.error}`);
    return s.state === 'running' ? s : null;
  }, ms));
}

async function sliverGone(id: string, ms = 60_000): Promise<void> {
  let last = '';
  await explained(until(`the registry to forget sliver ${id}`, async () =>
    admin.getSliver(id).then(
      (x) => ((last = `${x.state}${x.error ? ` (${x.error})` : ''}`), false),
      (err) => err instanceof ApiError && err.status === 404,
    ), ms).catch((err: Error) => {
    throw new Error(`${err.message}; its last state: ${last || 'never seen'}`);
  }));
}

/**
 * A wait that, when it fails, says what node 3 looked like then: its agent's last log lines, its
 * containers and its nftables maps (node 3's agent is the process these tests kill and restart).
 */
async function explained<T>(wait: Promise<T>): Promise<T> {
  try {
    return await wait;
  } catch (err) {
    const n = node(3);
    const [containers, table] = await Promise.all([
      // In the node's namespace, as the agent runs lxc: a container's command socket is an
      // abstract one, seen only from there (from elsewhere every container shows STOPPED).
      tryRun('nsenter', [`--net=/run/netns/${n.ns}`, '--', 'lxc-ls', '-P', join(n.stateDir, 'lxc'), '-f']).then((r) => r?.stdout ?? '(lxc-ls failed)'),
      tryRun('ip', ['netns', 'exec', n.ns, 'nft', 'list', 'table', 'inet', 'planetlite']).then((r) => r?.stdout ?? '(no table)'),
    ]);
    const agent = agent3 ? `agent 3 (${agent3.running ? 'running' : 'exited'}), its last log lines:\n${agent3.tail(40)}` : 'no agent 3';
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- node 3 then ---\n${agent}\ncontainers:\n${containers}\nnftables:\n${table}`);
  }
}

/** Waits for a deleted slice to disappear; on timeout says which of its slivers are left, where, in which state. */
async function sliceGone(slice: string, ms = 60_000): Promise<void> {
  try {
    await until(`slice ${slice} to be gone`, async () => admin.getSlice(slice).then(() => false, (err) => err instanceof ApiError && err.status === 404), ms);
  } catch (err) {
    const left = await admin.listSlivers(slice).catch(() => []);
    const where = left.map((x) => `${x.id} on node ${nodes.find((n) => n.id === x.node_id)?.n ?? x.node_id}: ${x.state}${x.error ? ` (${x.error})` : ''}`);
    throw new Error(`${err instanceof Error ? err.message : String(err)}; slivers left: ${where.join('; ') || 'none'}`);
  }
}

async function newSliver(slice: string, n: number): Promise<Sliver> {
  const s = await admin.createSliver(slice, node(n).id);
  created.add(s.id);
  return s;
}

/** Runs a shell command inside a sliver (ssh as root) and gives its output. */
function inSliver(s: Sliver, script: string): Promise<string> {
  return sshFrom(EXP, { identity: key, host: s.ssh.host, port: s.ssh.port, user: 'root' }, script);
}

/** From inside a sliver: the first line a TCP connection to host:port yields, or 'NOTHING'. */
function probeTcp(from: Sliver, host: string, port: number): Promise<string> {
  return inSliver(from, `out=$(timeout 5 nc -w 2 ${host} ${port} </dev/null 2>/dev/null | head -n 1); echo "\${out:-NOTHING}"`);
}

/** From inside a sliver: 'up' if one ping to address is answered, else 'down'. */
function probePing(from: Sliver, address: string): Promise<string> {
  return inSliver(from, `if ping -c 1 -W 2 ${address} >/dev/null 2>&1; then echo up; else echo down; fi`);
}

/**
 * Interposers for `nft` and `lxc-start`, found first on the PATH of an agent started with holds:
 * while HOLD_DIR/TOOL.hold exists, a call whose arguments match the extended regular expression
 * in it is recorded in HOLD_DIR/TOOL.called and waits; then (or at once, for any other call) the
 * real tool runs with the same arguments and input. They change no behaviour, only when a step
 * happens, so that a kill can land at an exact point.
 */
async function makeHolds(): Promise<void> {
  holdDir = join(dir, 'holds');
  mkdirSync(holdDir, { mode: 0o700 });
  for (const tool of ['nft', 'lxc-start', 'lxc-stop', 'btrfs']) {
    const real = await exec('sh', ['-c', `command -v ${tool}`]);
    const script = [
      '#!/bin/sh',
      `if [ -e '${holdDir}/${tool}.hold' ] && printf '%s\\n' "$*" | grep -Eq -- "$(cat '${holdDir}/${tool}.hold')"; then`,
      `  echo "$$ $*" >> '${holdDir}/${tool}.called'`,
      `  while [ -e '${holdDir}/${tool}.hold' ]; do sleep 0.05; done`,
      'fi',
      `exec '${real}' "$@"`,
      '',
    ].join('\n');
    writeFileSync(join(holdDir, tool), script, { mode: 0o755 });
  }
}

/** What is left on a node once it has had up to ms to clean up: [] as soon as it is clean. */
async function leftoversAfter(n: TestNode, ids?: string[], ms = 20_000): Promise<string[]> {
  const look = () => sliverLeftovers({ stateDir: n.stateDir, ns: n.ns, ...(ids ? { ids } : {}) });
  await until(`node ${n.n} to be clean`, async () => (await look()).length === 0, ms).catch(() => undefined);
  return look();
}

/** The host end of a sliver's /30 (its gateway): the address just below the sliver's. */
function gatewayOf(address: string): string {
  const parts = address.split('.').map(Number);
  parts[3] = parts[3]! - 1;
  return parts.join('.');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pl-testbed-'));
  chmodSync(dir, 0o711); // unprivileged slivers traverse it to their lxcpath

  internet = await makeInternet({ tag, octet });
  expect(internet.ns).toBe(INET);
  await joinInternet(internet, { ns: EXP, host: 100, link: `pt${tag}x` });
  for (const n of [1, 2, 3]) {
    const ns = `pl-node${n}-${tag}`;
    nodes.push({
      n,
      ns,
      address: '',
      stateDir: join(dir, `node${n}`),
      pool: join(dir, `node${n}-pool.img`),
      subnet: `10.${subnetBase}.${n}.0/24`,
      id: '',
    });
    node(n).address = await joinInternet(internet, { ns, host: 10 + n, link: `pt${tag}n${n}` });
  }

  databaseUrl = await createTestDatabase(inject('pgUrl'), 'testbed');
  registry = await startRegistry(registryOptions('127.0.0.1:0'));
  registryPort = Number(new URL(registry.url).port);
  trustRegistry(registry.url, registry.ca!);
  admin = new PlanetLiteClient({ registry: registry.url });
  await admin.login(ADMIN.email, ADMIN.password);
  await admin.createSite({ login_base: 'tb', name: 'Testbed', max_slices: 10, max_slivers: 30 });
  key = join(dir, 'id_ed25519');
  await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'experimenter', '-f', key]);
  await admin.addKey((await admin.me()).id, readFileSync(`${key}.pub`, 'utf8'));

  await makeHolds();
  const image = join(dir, 'tiny.tar');
  await exec('bash', [join(ROOT, 'infra/images/tiny/build.sh'), image], 120_000);

  await Promise.all(
    nodes.map(async (n) => {
      const token = (await admin.createEnrollmentToken('tb')).token;
      const hostname = `node${n.n}.${tag}.test`;
      if (n.n < 3) {
        const e = await enroll({ registry: registry!.url, token, caPin: registry!.caPin!, address: n.address, hostname, stateDir: n.stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null } });
        n.id = e.node_id;
        const settings = { pool: n.pool, pool_size: '1G', sliver_subnet: n.subnet, netns: n.ns, vm: 'off' as const };
        await importImage({ stateDir: n.stateDir, name: 'tiny', file: image, settings });
        const agent = new Agent({ stateDir: n.stateDir, log: log.child({ node: n.n }), settings, waitSeconds: 30, reportEveryMs: 2000 });
        agents.set(n.n, agent);
        await agent.start();
      } else {
        // Node 3 the way a site admin does it: the command line, then the daemon as its own process.
        await exec(process.execPath, [AGENT_BIN, 'enroll', '--registry', registry!.url, '--token', token, '--ca-pin', registry!.caPin!, '--address', n.address, '--hostname', hostname, '--state-dir', n.stateDir]);
        n.id = (JSON.parse(readFileSync(join(n.stateDir, 'node.json'), 'utf8')) as { node_id: string }).node_id;
        await exec(process.execPath, [AGENT_BIN, 'image', 'import', 'tiny', image, '--state-dir', n.stateDir, '--pool', n.pool, '--pool-size', '1G'], 120_000);
        await startedAgent3();
      }
    }),
  );
}, 240_000);

afterAll(async () => {
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      process.stderr.write(`testbed teardown: ${what}: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  };
  nodeService?.kill('SIGKILL');
  if (agent3) {
    const a = agent3;
    await step('agent 3', async () => {
      a.kill('SIGKILL', true);
      await a.exited;
    });
  }
  for (const [n, a] of agents) await step(`agent ${n}`, () => Promise.race([a.stop(), new Promise((r) => setTimeout(r, 10_000))]));
  // Containers a failure left (slivers, or an agent's start-up probe): stopped by removeNode, then their cgroups.
  const containers = new Set([...created].map((id) => `sl-${id}`));
  for (const n of nodes) for (const name of await readdir(join(n.stateDir, 'lxc')).catch(() => [] as string[])) containers.add(name);
  for (const n of nodes) await step(`node ${n.n}`, () => removeNode({ stateDir: n.stateDir, ns: n.ns, poolFile: n.pool }));
  await step('cgroups', () => removeLxcCgroups(containers));
  await step('experimenter namespace', () => tryRun('ip', ['netns', 'del', EXP]));
  await step('internet', () => removeInternet(internet ?? { ns: INET }));
  if (registry) await step('registry', () => registry!.close());
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 180_000);

describe('a testbed of three nodes', () => {
  const multi: Sliver[] = [];
  let other: Sliver;

  it('has three nodes online, each at its own public address', async () => {
    const listed = await until('three nodes online', async () => {
      const all = await admin.listNodes({ site: 'tb' });
      return all.length === 3 && all.every((x) => x.state === 'online') ? all : null;
    });
    expect(listed.map((x) => x.address).sort()).toEqual(nodes.map((n) => n.address).sort());
    expect(new Set(listed.map((x) => x.id))).toEqual(new Set(nodes.map((n) => n.id)));
  }, 90_000);

  it('gives a slice a sliver on every node; ssh -p PORT SLICE@NODE reaches each, with its slice name and hostname', async () => {
    await admin.createSlice({ name: 'tb_multi', description: 'one sliver per node', url: 'https://example.org/multi', image: 'tiny' });
    for (const n of nodes) multi.push(await newSliver('tb_multi', n.n));
    for (let i = 0; i < multi.length; i++) multi[i] = await sliverRunning(multi[i]!.id);
    for (const [i, s] of multi.entries()) {
      const n = nodes[i]!;
      expect(s.node_id).toBe(n.id);
      expect(s.ssh).toEqual({ host: n.address, port: s.ports.first, user: 'tb_multi' });
      // Each node hands out its sliver address from its own subnet.
      expect(s.address).toMatch(new RegExp(`^10\\.${subnetBase}\\.${n.n}\\.`));
      const out = await until(`ssh into the sliver on node ${n.n}`, () => ssh(s, 'cat /etc/slicename; hostname; id -un'), 30_000);
      expect(out.split('\n')).toEqual(['tb_multi', 'tb_multi', 'tb_multi']);
    }
    // The slivers are three different machines: each its own root filesystem.
    const marks = await Promise.all(multi.map((s, i) => ssh(s, `echo node${i + 1} > /tmp/mark; cat /tmp/mark`)));
    expect(marks).toEqual(['node1', 'node2', 'node3']);
    expect(await ssh(multi[0]!, 'cat /tmp/mark')).toBe('node1');
  }, 180_000);

  it('keeps two slices on one node apart: only the public forwarded ports connect them', async () => {
    await admin.createSlice({ name: 'tb_other', description: 'a neighbour on node 1', url: 'https://example.org/other', image: 'tiny' });
    other = await sliverRunning((await newSliver('tb_other', 1)).id);
    const a = multi[0]!;
    const b = other;
    expect(b.ssh.host).toBe(node(1).address);
    expect(b.address).not.toBe(a.address);
    expect(await until('ssh into the second slice', () => ssh(b, 'cat /etc/slicename'), 30_000)).toBe('tb_other');

    // Private addresses: nothing gets through, either way (the probes wait out their timeouts, so side by side).
    expect(await Promise.all([probeTcp(a, b.address!, 22), probeTcp(b, a.address!, 22), probePing(a, b.address!), probePing(b, a.address!)]))
      .toEqual(['NOTHING', 'NOTHING', 'down', 'down']);
    // The same probes do work where the design allows: the neighbour's public port on this node,
    // a sliver's public port on another node, and a ping to the sliver's own gateway.
    expect(await probeTcp(a, node(1).address, b.ports.first)).toMatch(/^SSH-2\.0-/);
    expect(await probeTcp(b, node(1).address, a.ports.first)).toMatch(/^SSH-2\.0-/);
    expect(await probeTcp(a, node(2).address, multi[1]!.ports.first)).toMatch(/^SSH-2\.0-/);
    expect(await probePing(a, gatewayOf(a.address!))).toBe('up');

    // A service of node 1 itself: the experimenter reaches it, slivers do not (neither at the
    // node's public address nor at their gateway).
    nodeService = spawn('ip', ['netns', 'exec', node(1).ns, 'busybox', 'nc', '-ll', '-p', String(NODE_SERVICE_PORT), '-e', '/bin/echo', 'node-service'], { stdio: 'ignore' });
    const viaNet = await until('the node service to answer the experimenter', async () => {
      const out = await exec('ip', ['netns', 'exec', EXP, 'sh', '-c', `timeout 6 busybox nc -w 3 ${node(1).address} ${NODE_SERVICE_PORT} </dev/null`]).catch(() => '');
      return out === 'node-service' ? out : null;
    }, 20_000);
    expect(viaNet).toBe('node-service');
    expect(await Promise.all([probeTcp(a, node(1).address, NODE_SERVICE_PORT), probeTcp(a, gatewayOf(a.address!), NODE_SERVICE_PORT)])).toEqual(['NOTHING', 'NOTHING']);
    nodeService.kill('SIGKILL');
  }, 180_000);

  describe('node 3 with its agent SIGKILLed while it builds a sliver', () => {
    // Each kill point: the agent logs `reconcile step` just before that step; the kill is sent
    // from the handler that reads the line, so it lands inside that step or just after it.
    const points: Array<{ step: string; group?: boolean; delayMs?: number }> = [
      { step: 'root' },
      { step: 'provision' },
      { step: 'network' },
      { step: 'shaping' },
      { step: 'define' },
      { step: 'nftables' },
      { step: 'lifecycle' },
      { step: 'lifecycle', delayMs: 150 },
      // The whole process group: the host commands the agent was running die with it.
      { step: 'provision', group: true },
      { step: 'lifecycle', group: true },
    ];
    let first = true;

    for (const p of points) {
      const name = `${p.group ? 'its process group' : 'the agent'} killed at step '${p.step}'${p.delayMs ? ` + ${p.delayMs} ms` : ''}`;
      it(`converges after ${name}, and leaves nothing once the sliver is deleted`, async () => {
        if (first) {
          await admin.createSlice({ name: 'tb_crash', description: 'killed agents', url: 'https://example.org/crash', image: 'tiny' });
          first = false;
        }
        const a = agent3?.running ? agent3 : await startedAgent3();
        const before = new Set(created);
        const killed = a.killWhen(`reconcile step ${p.step} of the new sliver`, (r: LogRecord) => r.msg === 'reconcile step' && r.step === p.step && typeof r.sliver === 'string' && !before.has(r.sliver), { group: p.group, delayMs: p.delayMs, ms: 60_000 });
        killed.catch(() => undefined); // awaited below; never an unhandled rejection if creation fails first
        const s = await newSliver('tb_crash', 3);
        const rec = await killed;
        expect(rec.sliver).toBe(s.id);
        expect((await a.exited).signal).toBe('SIGKILL');
        // Half a sliver is on the node (at least the ledger's record of it) for the next agent to finish.
        expect(await sliverLeftovers({ stateDir: node(3).stateDir, ns: node(3).ns, ids: [s.id] })).not.toEqual([]);
        // Killed as it began a step, the agent never finished the sliver, so it never said 'running'.
        // (With a delay the kill may land after the start; then only what follows has to hold.)
        if (!p.delayMs) expect(['pending', 'provisioning']).toContain((await admin.getSliver(s.id)).state);

        await startedAgent3();
        const running = await sliverRunning(s.id);
        expect(running.ssh).toEqual({ host: node(3).address, port: running.ports.first, user: 'tb_crash' });
        expect(await explained(until('ssh into the rebuilt sliver', () => ssh(running, 'cat /etc/slicename; hostname'), 30_000))).toBe('tb_crash\ntb_crash');

        await admin.deleteSliver(s.id);
        await sliverGone(s.id);
        expect(await sliverLeftovers({ stateDir: node(3).stateDir, ns: node(3).ns, ids: [s.id] })).toEqual([]);
      }, 180_000);
    }

    it('still runs the slice sliver it had before all that', async () => {
      expect(await ssh(multi[2]!, 'cat /etc/slicename; cat /tmp/mark')).toBe('tb_multi\nnode3');
      expect((await admin.getSliver(multi[2]!.id)).state).toBe('running');
    }, 60_000);
  });

  describe('with the registry down', () => {
    let from3 = 0;

    it('slivers keep answering ssh and the agents keep running', async () => {
      expect(agent3?.running).toBe(true);
      from3 = agent3!.records.length;
      await registry!.close();
      registry = null;
      expect(await fetch(`https://127.0.0.1:${registryPort}/healthz`).then(() => 'up', () => 'down')).toBe('down');

      // Every agent notices…
      for (const [n, a] of agents) await until(`agent ${n} to notice the registry is gone`, async () => !a.sync.reachable, 60_000);
      await agent3!.waitFor('agent 3 to notice the registry is gone', (r) => r.msg === 'registry unreachable; keeping slivers as they are', { from: from3 });
      // …and keeps the slivers as they are.
      for (const s of [...multi, other]) expect(await ssh(s, 'cat /etc/slicename')).toBe(s.slice);
      // A while later (a few of its retries), node 3's agent is still there and so are the slivers.
      await new Promise((r) => setTimeout(r, 3000));
      expect(agent3!.running).toBe(true);
      for (const s of [...multi, other]) expect(await ssh(s, 'cat /etc/slicename')).toBe(s.slice);
    }, 120_000);

    it('comes back on the same port and database, and a change made then reaches the agents', async () => {
      const restartedAt = Date.now();
      registry = await startRegistry(registryOptions(`127.0.0.1:${registryPort}`));
      expect(registry.url).toBe(`https://127.0.0.1:${registryPort}`);
      expect(registry.caPin).toBe(caPinOf(readFileSync(join(node(3).stateDir, 'registry-ca.pem'), 'utf8')));
      // The same database: the admin's token from before still works, the slivers are all there.
      expect((await admin.getSliver(multi[0]!.id)).state).toBe('running');

      // A change for every node: a deletion and a new sliver on node 2, a new sliver on nodes 1 and 3.
      await admin.deleteSliver(multi[1]!.id);
      const fresh = [await newSliver('tb_crash', 1), await newSliver('tb_other', 2), await newSliver('tb_other', 3)];
      await sliverGone(multi[1]!.id, 90_000);
      expect(await sliverLeftovers({ stateDir: node(2).stateDir, ns: node(2).ns, ids: [multi[1]!.id] })).toEqual([]);
      for (const f of fresh) {
        const s = await sliverRunning(f.id, 90_000);
        expect(await explained(until('ssh into a sliver made after the outage', () => ssh(s, 'cat /etc/slicename'), 30_000))).toBe(f.slice);
      }
      // (The agents' scheduled full pull may have brought the change before their long-poll loop
      // came out of its backoff: so the loop may need a moment longer.)
      for (const [n, a] of agents) await until(`agent ${n}'s long-poll to reach the registry again`, async () => a.sync.reachable, 60_000);
      expect(agent3!.running).toBe(true);
      await agent3!.waitFor('agent 3 to reach the registry again', (r) => r.msg === 'registry reachable again', { from: from3, ms: 60_000 });
      // Every node has reported to the registry since it came back. The registry rewrites a node's
      // last_seen only once it is 30 s old (a fifth of the 150 s offline bound), counted from its
      // own last write, which may be the node's first report after the restart; node 3's agent
      // is heard every 30 s (its reports) or less: up to about a minute after that report, and
      // CI's load on top (60 s was once too short).
      let nodesSeen = '';
      const listed = await until('every node to report in', async () => {
        const all = await admin.listNodes({ site: 'tb' });
        nodesSeen = all.map((x) => `${x.hostname} ${x.state} last_seen ${x.last_seen}`).join('; ');
        return all.every((x) => x.last_seen !== null && Date.parse(x.last_seen) > restartedAt) ? all : null;
      }, 120_000).catch((err: unknown) => {
        throw new Error(`${String(err)} (registry back at ${new Date(restartedAt).toISOString()}; ${nodesSeen})`);
      });
      expect(listed.map((x) => x.state)).toEqual(['online', 'online', 'online']);
    }, 240_000);
  });

  describe('deleting every slice', () => {
    it('tears down every sliver and leaves every node clean; node 3\'s agent then stops cleanly', async () => {
      for (const slice of ['tb_multi', 'tb_other', 'tb_crash']) await admin.deleteSlice(slice);
      for (const id of created) await sliverGone(id, 90_000);
      for (const n of nodes) {
        expect(await sliverLeftovers({ stateDir: n.stateDir, ns: n.ns, ids: [...created] }), `node ${n.n}`).toEqual([]);
        expect(await sliverLeftovers({ stateDir: n.stateDir, ns: n.ns }), `node ${n.n}`).toEqual([]);
      }
      const stopped = await agent3!.stop();
      expect(stopped).toEqual({ code: 0, signal: null });
    }, 180_000);

    it('makes the registry forget the slices once their slivers are gone', async () => {
      // tb_multi and tb_other had slivers on several nodes, whose agents confirm them gone at about the same time.
      for (const slice of ['tb_multi', 'tb_other', 'tb_crash']) await sliceGone(slice, 30_000);
    }, 120_000);
  });

  describe('node 3 with its agent SIGKILLed during a teardown and during its own start', () => {
    // Each point: a host command of the teardown is held by its interposer, the agent and that
    // command are SIGKILLed together, a new agent starts. The sliver is node 3's only one, so no
    // other sliver's work rewrites the node's nftables table afterwards.
    const points = [
      { tool: 'btrfs', pattern: '^subvolume delete', what: 'as it deletes the root filesystem' },
      { tool: 'lxc-stop', pattern: ' -k', what: 'as it stops the container' },
      { tool: 'nft', pattern: '^-f -$', what: 'as it rewrites the nftables table without the sliver' },
    ];
    let first = true;
    for (const p of points) {
      it(`finishes a teardown after being killed ${p.what}`, async () => {
        if (first) {
          await admin.createSlice({ name: 'tb_last', description: 'the last ones', url: 'https://example.org/last', image: 'tiny' });
          first = false;
        }
        if (agent3?.running && !agent3.holds) await agent3.stop();
        const a = agent3?.running ? agent3 : await startedAgent3({ holds: true });
        const s = await sliverRunning((await newSliver('tb_last', 3)).id);
        expect(await until('ssh into the sliver', () => ssh(s, 'cat /etc/slicename'), 30_000)).toBe('tb_last');

        writeFileSync(join(holdDir, `${p.tool}.hold`), p.pattern);
        try {
          await admin.deleteSliver(s.id);
          await until(`the teardown to reach ${p.tool}`, async () => existsSync(join(holdDir, `${p.tool}.called`)), 60_000);
          expect((await admin.getSliver(s.id)).state).toBe('deleting');
          if (p.tool === 'nft') {
            // The window: the container is gone, the table still has the sliver's chains, and the
            // ledger still holds it (it lets go only after the rewrite), so a new agent finishes the job.
            const ledger = readLedger(node(3).stateDir);
            expect(ledger.map((r) => r.id)).toContain(s.id);
            const left = (await sliverLeftovers({ stateDir: node(3).stateDir, ns: node(3).ns, ids: [s.id] })).map((l) => l.split(' ')[0]);
            expect(left).toContain('nftables:');
            expect(left).not.toContain('lxc:');
          }
          a.kill('SIGKILL', true); // the agent and the command it was about to run
          await a.exited;
        } finally {
          rmSync(join(holdDir, `${p.tool}.hold`), { force: true });
          rmSync(join(holdDir, `${p.tool}.called`), { force: true });
        }

        const b = await startedAgent3({ holds: true });
        await until('a reconcile pass of the restarted agent', async () => b.records.some((r) => r.msg === 'reconcile pass'), 60_000);
        await sliverGone(s.id);
        expect(await leftoversAfter(node(3), [s.id])).toEqual([]);
      }, 180_000);
    }

    it('cleans up after being killed during its own start-up probe', async () => {
      if (agent3?.running) {
        agent3.kill('SIGKILL', true);
        await agent3.exited;
      }
      // The probe container's lxc-start (before any sliver: node 3 has none).
      writeFileSync(join(holdDir, 'lxc-start.hold'), ' -d'); // a start, not the --version check
      const a = startAgent3({ holds: true });
      await until('the start-up probe to reach lxc-start', async () => existsSync(join(holdDir, 'lxc-start.called')), 60_000);
      expect(a.records.some((r) => r.msg === 'agent running')).toBe(false);
      // The probe's container and its root filesystem are on the node when the agent dies.
      const probeIds = (await readdir(join(node(3).stateDir, 'lxc'))).map((name) => /^sl-(.*)$/.exec(name)?.[1]).filter((id): id is string => !!id && !created.has(id));
      expect(probeIds).toHaveLength(1);
      const probeRoots = async () => (await readdir(join(node(3).stateDir, 'pool'))).filter((name) => name.startsWith('.idmap-probe-'));
      expect(await probeRoots()).toHaveLength(1);
      a.kill('SIGKILL', true);
      await a.exited;
      rmSync(join(holdDir, 'lxc-start.hold'));
      rmSync(join(holdDir, 'lxc-start.called'));

      const b = await startedAgent3({ holds: true });
      await until('a reconcile pass', async () => b.records.some((r) => r.msg === 'reconcile pass'), 60_000);
      expect(await leftoversAfter(node(3), probeIds), b.tail(60)).toEqual([]);
      expect(await probeRoots()).toEqual([]);
      await admin.deleteSlice('tb_last');
      await sliceGone('tb_last');
      expect(await b.stop()).toEqual({ code: 0, signal: null });
    }, 180_000);
  });
});
