// Rate caps and byte counters for real, in network namespaces this file creates (as in
// nftables.test.ts): NODE stands for the host (the driver runs with netns=NODE), NET for the
// internet (an iperf3 server), SLIVERn for slivers (the test does what LXC's `phys` networking
// does with peerIf). Rates are measured with iperf3 between the namespaces.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, tryRun } from '@planetlite/host';
import type { SliverNet, SliverNetSpec } from './driver.js';
import { NftablesDriver } from './nftables/driver.js';
import { deviceNames, ifbName } from './nftables/names.js';

const execFileP = promisify(execFile);
const suffix = randomBytes(3).toString('hex');
const NODE = `plshp-${suffix}-node`;
const NET = `plshp-${suffix}-net`;
const sliverNs = (n: number): string => `plshp-${suffix}-s${n}`;
const PUBLIC = '198.18.8.1';
const NET_ADDR = '198.18.8.2';
const SUBNET = '10.90.0.0/16';
const IPERF_PORT = 5201;
/** The proof: a capped sliver measures within 10 % of its cap. */
const TOLERANCE = 0.1;

const namespaces: string[] = [];
const servers: ChildProcess[] = [];
let driver: NftablesDriver;

async function ns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
  namespaces.push(name);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/** What LXC does with a `phys` link: move the peer in, name it eth0, address, default route. */
async function plugIn(net: SliverNet, namespace: string): Promise<void> {
  await run('ip', ['-n', NODE, 'link', 'set', 'dev', net.peerIf!, 'netns', namespace]);
  await run('ip', ['-n', namespace, 'link', 'set', 'dev', net.peerIf!, 'name', 'eth0']);
  await run('ip', ['-n', namespace, 'addr', 'add', `${net.sliverAddress}/${net.prefix}`, 'dev', 'eth0']);
  await run('ip', ['-n', namespace, 'link', 'set', 'dev', 'eth0', 'up']);
  await run('ip', ['-n', namespace, 'route', 'add', 'default', 'via', net.gateway]);
}

async function startIperfServer(namespace: string, address: string): Promise<void> {
  // --forceflush: the "listening" line arrives now, not when the pipe's buffer fills.
  const child = spawn('ip', ['netns', 'exec', namespace, 'iperf3', '-s', '-B', address, '-p', String(IPERF_PORT), '--forceflush'], { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(child);
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.stdout!.on('data', (d) => String(d).includes('Server listening') && resolve());
    child.on('exit', (code) => reject(new Error(`iperf3 server exited with ${code}: ${err}`)));
    setTimeout(() => reject(new Error(`iperf3 server not listening: ${err}`)), 10_000);
  });
}

interface IperfSum {
  bytes: number;
  bits_per_second: number;
}
interface IperfResult {
  error?: string;
  end?: { sum_sent?: IperfSum; sum_received?: IperfSum };
}

/**
 * iperf3 from the sliver to the internet's server: 'out' = the sliver sends, 'in' = the server
 * sends to it (-R). omit: seconds of slow start left out of the figures.
 */
async function iperf(namespace: string, direction: 'in' | 'out', seconds: number, omit: number): Promise<{ kbps: number; sent: number; received: number }> {
  const args = ['netns', 'exec', namespace, 'iperf3', '-c', NET_ADDR, '-p', String(IPERF_PORT), '-J', '-t', String(seconds), '-O', String(omit), ...(direction === 'in' ? ['-R'] : [])];
  let stdout: string;
  try {
    ({ stdout } = await execFileP('ip', args, { timeout: (seconds + omit + 20) * 1000 }));
  } catch (err) {
    // With -J, iperf3 puts its error in the JSON on stdout.
    const out = (err as { stdout?: string }).stdout ?? '';
    throw new Error(`iperf3 ${direction} failed: ${out.slice(0, 500) || String(err)}`, { cause: err });
  }
  const j = JSON.parse(stdout) as IperfResult;
  const sent = j.end?.sum_sent;
  const received = j.end?.sum_received;
  if (j.error || !sent || !received) throw new Error(`iperf3 ${direction}: ${j.error ?? 'no summary'}`);
  return { kbps: received.bits_per_second / 1000, sent: sent.bytes, received: received.bytes };
}

/** A 5 s run after 1 s of slow start, as the proof asks. */
const measure = async (namespace: string, direction: 'in' | 'out'): Promise<number> => (await iperf(namespace, direction, 5, 1)).kbps;

const measured: string[] = [];
function expectNear(kbps: number, cap: number, what: string): void {
  measured.push(`${what}: cap ${cap} kbit/s, measured ${Math.round(kbps)} kbit/s (${((kbps / cap) * 100).toFixed(1)} %)`);
  expect(Math.abs(kbps - cap) / cap, `${what}: ${Math.round(kbps)} kbit/s through a cap of ${cap} kbit/s`).toBeLessThan(TOLERANCE);
}

interface QdiscJson {
  kind: string;
  handle: string;
  root?: boolean;
  bytes?: number;
}
const qdiscs = async (dev: string): Promise<QdiscJson[]> => JSON.parse((await run('tc', ['-n', NODE, '-s', '-j', 'qdisc', 'show', 'dev', dev])).stdout) as QdiscJson[];
const htbRoot = async (dev: string): Promise<QdiscJson | undefined> => (await qdiscs(dev)).find((q) => q.root && q.kind === 'htb');
/** `tc -j class show` prints options as text here; the rate comes from the plain output. */
const classRate = async (dev: string): Promise<string | null> =>
  /class htb 1:1 root .*? rate (\S+) ceil (\S+)/.exec((await run('tc', ['-n', NODE, 'class', 'show', 'dev', dev])).stdout)?.[1] ?? null;
interface LinkJson {
  ifname: string;
  ifindex: number;
  ifalias?: string;
  linkinfo?: { info_kind?: string };
}
const nodeLinks = async (): Promise<LinkJson[]> => JSON.parse((await run('ip', ['-n', NODE, '-d', '-j', 'link', 'show'])).stdout) as LinkJson[];
const ours = async (): Promise<string[]> => (await nodeLinks()).map((l) => l.ifname).filter((n) => /^pl[hsi]/.test(n)).sort();

const spec = (n: number, kind: 'veth' | 'tap' = 'veth'): SliverNetSpec => ({
  id: randomUUID(),
  slot: n - 1,
  ports: { first: 21000 + 10 * (n - 1), last: 21009 + 10 * (n - 1) },
  kind,
});
const s1 = spec(1);
const ifb1 = ifbName(s1.id);
let net1: SliverNet;

beforeAll(async () => {
  for (const n of [NODE, NET, sliverNs(1)]) await ns(n);
  await run('ip', ['-n', NODE, 'link', 'add', 'uplink', 'type', 'veth', 'peer', 'name', 'uplink', 'netns', NET]);
  await run('ip', ['-n', NODE, 'addr', 'add', `${PUBLIC}/24`, 'dev', 'uplink']);
  await run('ip', ['-n', NET, 'addr', 'add', `${NET_ADDR}/24`, 'dev', 'uplink']);
  await run('ip', ['-n', NODE, 'link', 'set', 'uplink', 'up']);
  await run('ip', ['-n', NET, 'link', 'set', 'uplink', 'up']);
  driver = new NftablesDriver({ publicAddress: PUBLIC, publicInterface: 'uplink', sliverSubnet: SUBNET, netns: NODE });
  await startIperfServer(NET, NET_ADDR);
});

afterAll(async () => {
  for (const child of servers) {
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await gone;
    }
  }
  await driver?.teardown().catch(() => undefined);
  for (const n of namespaces.reverse()) await tryRun('ip', ['netns', 'del', n]);
  if (measured.length) console.log(`iperf3 through the caps:\n  ${measured.join('\n  ')}`);
  const left = (await run('ip', ['netns', 'list'])).stdout;
  expect(left).not.toContain(`plshp-${suffix}`);
});

describe('per-sliver rate caps and counters (tc HTB + ifb) in network namespaces', () => {
  it('refuses a bad rate before running any command, and a cap for a sliver that is not attached', async () => {
    // A driver whose namespace does not exist fails on its first command: these errors show none ran.
    const nowhere = new NftablesDriver({ publicAddress: PUBLIC, sliverSubnet: SUBNET, netns: `plshp-${suffix}-missing` });
    await expect(nowhere.limit(s1.id, { inKbps: 7, outKbps: null })).rejects.toThrow(/inKbps must be an integer number of kbit\/s from 8 to 10000000/);
    await expect(nowhere.limit(s1.id, { inKbps: null, outKbps: 20000.5 })).rejects.toThrow(/outKbps must be an integer/);
    await expect(nowhere.limit(s1.id, { inKbps: null, outKbps: 10_000_001 })).rejects.toThrow(/outKbps must be an integer/);
    await expect(nowhere.limit('nope', { inKbps: null, outKbps: null })).rejects.toThrow(/uuid/);
    await expect(nowhere.limit(s1.id, { inKbps: 1000, outKbps: null })).rejects.toThrow(/missing|Cannot open|No such file/);
    // not attached yet
    await expect(driver.limit(s1.id, { inKbps: null, outKbps: 20000 })).rejects.toThrow(/does not exist: attach the sliver/);
    await driver.limit(s1.id, { inKbps: null, outKbps: null }); // nothing to remove
    expect(await ours()).toEqual([]);
  });

  it('caps a sliver at 20 Mbit/s each way: iperf3 measures within 10 %', async () => {
    net1 = await driver.attach(s1);
    await plugIn(net1, sliverNs(1));
    await driver.apply([s1]);
    await driver.limit(s1.id, { inKbps: 20000, outKbps: 20000 });
    await driver.limit(s1.id, { inKbps: 20000, outKbps: 20000 }); // idempotent
    const ifb = (await nodeLinks()).find((l) => l.ifname === ifb1);
    expect(ifb).toMatchObject({ ifalias: `planetlite-sliver:${s1.id}`, linkinfo: { info_kind: 'ifb' } });
    expect(await classRate(net1.hostIf)).toBe('20Mbit');
    expect(await classRate(ifb1)).toBe('20Mbit');
    expect(await driver.listAttached()).toEqual([s1.id]);
    expectNear(await measure(sliverNs(1), 'out'), 20000, 'outbound 20 Mbit/s');
    expectNear(await measure(sliverNs(1), 'in'), 20000, 'inbound 20 Mbit/s');
  });

  it('changes the caps live to 5 Mbit/s: same devices and qdiscs, class counters kept, new rates measured', async () => {
    const before = await nodeLinks();
    const hostBytes = (await htbRoot(net1.hostIf))?.bytes ?? 0;
    const ifbBytes = (await htbRoot(ifb1))?.bytes ?? 0;
    expect(hostBytes).toBeGreaterThan(0);
    expect(ifbBytes).toBeGreaterThan(0);
    await driver.limit(s1.id, { inKbps: 5000, outKbps: 5000 });
    // Nothing was made again: the ifb has its ifindex, the HTB roots their byte counts.
    expect((await nodeLinks()).find((l) => l.ifname === ifb1)?.ifindex).toBe(before.find((l) => l.ifname === ifb1)?.ifindex);
    expect((await htbRoot(net1.hostIf))?.bytes).toBeGreaterThanOrEqual(hostBytes);
    expect((await htbRoot(ifb1))?.bytes).toBeGreaterThanOrEqual(ifbBytes);
    expect(await classRate(net1.hostIf)).toBe('5Mbit');
    expectNear(await measure(sliverNs(1), 'out'), 5000, 'outbound after a live change to 5 Mbit/s');
    expectNear(await measure(sliverNs(1), 'in'), 5000, 'inbound after a live change to 5 Mbit/s');
  });

  it('counters() grow by about the bytes iperf3 moves, each way', async () => {
    for (const direction of ['out', 'in'] as const) {
      const before = (await driver.counters()).get(s1.id);
      const r = await iperf(sliverNs(1), direction, 2, 0);
      const after = (await driver.counters()).get(s1.id);
      expect(before).toBeDefined();
      expect(after).toBeDefined();
      const moved = direction === 'out' ? after!.txBytes - before!.txBytes : after!.rxBytes - before!.rxBytes;
      const acks = direction === 'out' ? after!.rxBytes - before!.rxBytes : after!.txBytes - before!.txBytes;
      measured.push(`counters ${direction}: device ${moved} bytes (other way ${acks}), iperf3 sent ${r.sent}, received ${r.received}`);
      // At least the payload that arrived; at most what was sent plus headers (≈ 5 %) and the control connection.
      expect(moved, `${direction}: device bytes vs iperf3 (sent ${r.sent}, received ${r.received})`).toBeGreaterThanOrEqual(r.received);
      expect(moved).toBeLessThan(r.sent * 1.1 + 65536);
      expect(acks).toBeLessThan(moved * 0.1); // the other way: only ACKs and control
    }
    // only attached slivers, by id
    expect([...(await driver.counters()).keys()]).toEqual([s1.id]);
  });

  it('removing a cap removes its qdiscs (and the ifb with the outbound one): traffic runs well above the old caps', async () => {
    await driver.limit(s1.id, { inKbps: 5000, outKbps: null });
    expect(await ours()).not.toContain(ifb1);
    expect((await qdiscs(net1.hostIf)).some((q) => q.kind === 'ingress')).toBe(false);
    expect(await classRate(net1.hostIf)).toBe('5Mbit');
    const out = await measure(sliverNs(1), 'out');
    measured.push(`outbound uncapped: ${Math.round(out)} kbit/s`);
    expect(out).toBeGreaterThan(2 * 20000);

    await driver.limit(s1.id, { inKbps: null, outKbps: null });
    await driver.limit(s1.id, { inKbps: null, outKbps: null });
    expect(await htbRoot(net1.hostIf)).toBeUndefined();
    const inbound = await measure(sliverNs(1), 'in');
    measured.push(`inbound uncapped: ${Math.round(inbound)} kbit/s`);
    expect(inbound).toBeGreaterThan(2 * 20000);
  });

  it('caps a tap the same way; refuses an ifb name another sliver holds; detach removes the ifb', async () => {
    const kvm = spec(2, 'tap');
    const tap = await driver.attach(kvm);
    await driver.limit(kvm.id, { inKbps: 1000, outKbps: 2000 });
    expect(await classRate(tap.hostIf)).toBe('1Mbit');
    expect(await classRate(ifbName(kvm.id))).toBe('2Mbit');
    await driver.detach(kvm.id);
    expect(await ours()).toEqual([net1.hostIf]);

    // a clash: this sliver's ifb name carries another sliver's alias → refused, and detach leaves it
    const victim = spec(3);
    await driver.attach(victim);
    await run('ip', ['-n', NODE, 'link', 'add', ifbName(victim.id), 'type', 'ifb']);
    await run('ip', ['-n', NODE, 'link', 'set', 'dev', ifbName(victim.id), 'alias', `planetlite-sliver:${s1.id}`]);
    await expect(driver.limit(victim.id, { inKbps: null, outKbps: 1000 })).rejects.toThrow(/is taken by/);
    await driver.detach(victim.id);
    expect(await ours()).toEqual([net1.hostIf, ifbName(victim.id)].sort());
    await run('ip', ['-n', NODE, 'link', 'del', 'dev', ifbName(victim.id)]);

    await driver.limit(s1.id, { inKbps: 3000, outKbps: 3000 });
    expect(await ours()).toContain(ifb1);
    await driver.detach(s1.id);
    expect(await ours()).toEqual([]);
    expect(await driver.listAttached()).toEqual([]);
  });

  it('an ifb a crash left without its link is listed, and detach or teardown removes it', async () => {
    const orphan = async (n: number): Promise<string> => {
      const s = spec(n);
      const net = await driver.attach(s);
      await driver.limit(s.id, { inKbps: null, outKbps: 1000 });
      await run('ip', ['-n', NODE, 'link', 'del', 'dev', net.hostIf]); // the crash: the link went, the ifb stayed
      expect(await ours()).toEqual([ifbName(s.id)]);
      return s.id;
    };
    const a = await orphan(4);
    expect(await driver.listAttached()).toEqual([a]);
    expect([...(await driver.counters()).keys()]).toEqual([]); // no link, nothing to count
    await driver.detach(a);
    expect(await ours()).toEqual([]);

    const b = await orphan(5);
    expect(deviceNames(b).hostIf).not.toBe(net1.hostIf);
    await driver.teardown();
    expect(await ours()).toEqual([]);
    expect(await driver.listAttached()).toEqual([]);
  });
});
