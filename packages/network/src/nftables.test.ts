// The nftables driver for real, inside network namespaces this file creates: NODE stands for the
// host (the driver runs with netns=NODE), NET for the internet, SLIVERn for each sliver (the test
// does what LXC's `phys` networking does with peerIf). Nothing touches the host's own network.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, tryRun } from '@planetlite/host';
import type { SliverNet, SliverNetSpec } from './driver.js';
import { NftablesDriver } from './nftables/driver.js';
import { deviceNames } from './nftables/names.js';

const suffix = randomBytes(3).toString('hex');
const NODE = `plnet-${suffix}-node`;
const NET = `plnet-${suffix}-net`;
const sliverNs = (n: number): string => `plnet-${suffix}-s${n}`;
const PUBLIC = '198.18.7.1';
const NET_ADDR = '198.18.7.2';
const SUBNET = '10.200.0.0/16';
const BLOCKED_MS = 700;

const namespaces: string[] = [];
const servers: ChildProcess[] = [];
const serverLog = new Map<string, string>();
let dir = '';
let driver: NftablesDriver;

// A banner server: `name proto:port ...`; every answer says who answered, on which port, to whom.
const SERVER = `
import net from 'node:net';
import dgram from 'node:dgram';
const [name, ...specs] = process.argv.slice(2);
let pending = specs.length;
const ready = () => { if (--pending === 0) process.stdout.write('ready\\n'); };
for (const spec of specs) {
  const [proto, port] = spec.split(':');
  if (proto === 'tcp') {
    net.createServer((s) => { s.on('error', () => {}); s.end(name + ' tcp ' + port + ' from ' + s.remoteAddress + '\\n'); })
      .listen(Number(port), '0.0.0.0', ready);
  } else {
    const u = dgram.createSocket('udp4');
    u.on('message', (_m, r) => {
      process.stdout.write('seen udp from ' + r.address + '\\n');
      u.send(name + ' udp ' + port + ' from ' + r.address + '\\n', r.port, r.address);
    });
    u.bind(Number(port), '0.0.0.0', ready);
  }
}
`;

// A client: prints what the server said, or ERR <why>.
const CLIENT = `
import net from 'node:net';
import dgram from 'node:dgram';
const [proto, host, port, ms, localAddress] = process.argv.slice(2);
const done = (text) => { process.stdout.write(text.trim() + '\\n'); process.exit(0); };
setTimeout(() => done('ERR timeout'), Number(ms));
if (proto === 'tcp') {
  let buf = '';
  const s = net.connect({ host, port: Number(port), localAddress });
  s.on('data', (d) => { buf += d; });
  s.on('end', () => done(buf));
  s.on('error', (e) => done('ERR ' + e.code));
} else {
  const u = dgram.createSocket('udp4');
  u.on('message', (m) => done(String(m)));
  u.bind({ address: localAddress ?? '0.0.0.0', port: 0 }, () => u.send('hi', Number(port), host));
}
`;

async function ns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
  namespaces.push(name);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

async function startServer(namespace: string, name: string, ...specs: string[]): Promise<void> {
  const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, join(dir, 'server.mjs'), name, ...specs], { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(child);
  serverLog.set(name, '');
  child.stdout!.on('data', (d) => serverLog.set(name, serverLog.get(name) + String(d)));
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.stdout!.on('data', (d) => String(d).includes('ready') && resolve());
    child.on('exit', (code) => reject(new Error(`server ${name} exited with ${code}: ${err}`)));
    setTimeout(() => reject(new Error(`server ${name} not ready: ${err}`)), 10_000);
  });
}

/** Connects from inside a namespace; returns the server's answer or `ERR …`. */
async function connect(namespace: string, proto: 'tcp' | 'udp', host: string, port: number, opts: { ms?: number; from?: string } = {}): Promise<string> {
  const args = [proto, host, String(port), String(opts.ms ?? 3000), ...(opts.from ? [opts.from] : [])];
  return (await run('ip', ['netns', 'exec', namespace, process.execPath, join(dir, 'client.mjs'), ...args])).stdout;
}

/** What LXC does with a `phys` link: move the peer in, name it eth0, address, default route. */
async function plugIn(net: SliverNet, namespace: string): Promise<void> {
  await run('ip', ['-n', NODE, 'link', 'set', 'dev', net.peerIf!, 'netns', namespace]);
  await run('ip', ['-n', namespace, 'link', 'set', 'dev', net.peerIf!, 'name', 'eth0']);
  await run('ip', ['-n', namespace, 'addr', 'add', `${net.sliverAddress}/${net.prefix}`, 'dev', 'eth0']);
  await run('ip', ['-n', namespace, 'link', 'set', 'dev', 'eth0', 'up']);
  await run('ip', ['-n', namespace, 'route', 'add', 'default', 'via', net.gateway]);
}

const listTable = async (): Promise<string> => (await run('ip', ['netns', 'exec', NODE, 'nft', 'list', 'table', 'inet', 'planetlite'])).stdout;
const nodeLinks = async (): Promise<string[]> =>
  (JSON.parse((await run('ip', ['-n', NODE, '-j', 'link', 'show'])).stdout) as Array<{ ifname: string }>).map((l) => l.ifname);

const spec = (n: number, kind: 'veth' | 'tap' = 'veth'): SliverNetSpec => ({
  id: randomUUID(),
  slot: n - 1,
  ports: { first: 20000 + 10 * (n - 1), last: 20009 + 10 * (n - 1) },
  kind,
});
const s1 = spec(1);
const s2 = spec(2);
let net1: SliverNet;
let net2: SliverNet;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'plnet-'));
  writeFileSync(join(dir, 'server.mjs'), SERVER);
  writeFileSync(join(dir, 'client.mjs'), CLIENT);
  for (const n of [NODE, NET, sliverNs(1), sliverNs(2), sliverNs(3)]) await ns(n);
  await run('ip', ['-n', NODE, 'link', 'add', 'uplink', 'type', 'veth', 'peer', 'name', 'uplink', 'netns', NET]);
  await run('ip', ['-n', NODE, 'addr', 'add', `${PUBLIC}/24`, 'dev', 'uplink']);
  await run('ip', ['-n', NET, 'addr', 'add', `${NET_ADDR}/24`, 'dev', 'uplink']);
  await run('ip', ['-n', NODE, 'link', 'set', 'uplink', 'up']);
  await run('ip', ['-n', NET, 'link', 'set', 'uplink', 'up']);
  driver = new NftablesDriver({ publicAddress: PUBLIC, publicInterface: 'uplink', sliverSubnet: SUBNET, netns: NODE });

  await startServer(NODE, 'node', 'tcp:8080');
  await startServer(NET, 'net', 'tcp:9000', 'udp:9001');
  for (const [n, s] of [[1, s1], [2, s2]] as const) {
    await startServer(sliverNs(n), `sliver-${n}`, 'tcp:22', `tcp:${s.ports.first + 3}`, 'udp:22');
  }
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
  if (dir) rmSync(dir, { recursive: true, force: true });
  const left = (await run('ip', ['netns', 'list'])).stdout;
  expect(left).not.toContain(`plnet-${suffix}`);
});

describe('nftables driver in network namespaces', () => {
  it('check() passes here and names what is wrong otherwise', async () => {
    await driver.check();
    const wrongIf = new NftablesDriver({ publicAddress: PUBLIC, publicInterface: 'eth9', sliverSubnet: SUBNET, netns: NODE });
    await expect(wrongIf.check()).rejects.toThrow(/not on the configured public interface eth9/);
    const wrongAddr = new NftablesDriver({ publicAddress: '198.18.9.9', sliverSubnet: SUBNET, netns: NODE });
    await expect(wrongAddr.check()).rejects.toThrow(/198\.18\.9\.9 is not configured/);
    const noNs = new NftablesDriver({ publicAddress: PUBLIC, sliverSubnet: SUBNET, netns: `plnet-${suffix}-missing` });
    await expect(noNs.check()).rejects.toThrow(/does not exist/);
    // A public interface named like a sliver's link would have its traffic dropped by the table.
    await run('ip', ['-n', NODE, 'link', 'add', 'plhpublic0', 'type', 'veth', 'peer', 'name', 'plnpeer0']);
    try {
      await run('ip', ['-n', NODE, 'addr', 'add', '198.18.9.20/32', 'dev', 'plhpublic0']);
      const clash = new NftablesDriver({ publicAddress: '198.18.9.20', sliverSubnet: SUBNET, netns: NODE });
      await expect(clash.check()).rejects.toThrow(/is on plhpublic0, a name PlanetLite keeps for slivers' links/);
    } finally {
      await run('ip', ['-n', NODE, 'link', 'del', 'plhpublic0']);
    }
  });

  it('attaches veth links with deterministic names and addresses, idempotently', async () => {
    net1 = await driver.attach(s1);
    net2 = await driver.attach(s2);
    expect(net1).toEqual({ id: s1.id, ...deviceNames(s1.id), hostAddress: '10.200.0.1', sliverAddress: '10.200.0.2', prefix: 30, gateway: '10.200.0.1' });
    expect(net2).toMatchObject({ hostAddress: '10.200.0.5', sliverAddress: '10.200.0.6', gateway: '10.200.0.5' });
    expect(await driver.attach(s1)).toEqual(net1);
    // ARP for a sliver not yet up is retried every 100 ms, not every second (the first ssh waits on it).
    const retrans = async (dev: string) => (await run('ip', ['netns', 'exec', NODE, 'cat', `/proc/sys/net/ipv4/neigh/${dev}/retrans_time_ms`])).stdout.trim();
    expect([await retrans(net1.hostIf), await retrans(net2.hostIf), await retrans('uplink')]).toEqual(['100', '100', '1000']);
    await plugIn(net1, sliverNs(1));
    await plugIn(net2, sliverNs(2));
    expect(await driver.attach(s1)).toEqual(net1); // peer already inside the sliver: still fine
    await driver.apply([s1, s2]);
  });

  it('forwards the port window from outside: lowest port → :22, the rest to the same port, per sliver', async () => {
    expect(await connect(NET, 'tcp', PUBLIC, 20000)).toBe(`sliver-1 tcp 22 from ${NET_ADDR}`);
    expect(await connect(NET, 'tcp', PUBLIC, 20003)).toBe(`sliver-1 tcp 20003 from ${NET_ADDR}`);
    expect(await connect(NET, 'tcp', PUBLIC, 20010)).toBe(`sliver-2 tcp 22 from ${NET_ADDR}`);
    expect(await connect(NET, 'tcp', PUBLIC, 20013)).toBe(`sliver-2 tcp 20013 from ${NET_ADDR}`);
    expect(await connect(NET, 'udp', PUBLIC, 20000)).toBe(`sliver-1 udp 22 from ${NET_ADDR}`);
    // a port inside the window with no server is refused by the sliver itself, outside any window by the node
    expect(await connect(NET, 'tcp', PUBLIC, 20004)).toBe('ERR ECONNREFUSED');
    // the node itself (the agent probing sshd) goes through the same window
    expect(await connect(NODE, 'tcp', PUBLIC, 20010)).toBe(`sliver-2 tcp 22 from ${PUBLIC}`);
  });

  it('masquerades a sliver going out: the internet sees the public address', async () => {
    expect(await connect(sliverNs(1), 'tcp', NET_ADDR, 9000)).toBe(`net tcp 9000 from ${PUBLIC}`);
    expect(await connect(sliverNs(2), 'tcp', NET_ADDR, 9000)).toBe(`net tcp 9000 from ${PUBLIC}`);
  });

  it('isolates slivers from each other and from the node, except through public ports', async () => {
    const blocked = `ERR timeout`;
    // sliver ↔ sliver on private addresses: dropped
    expect(await connect(sliverNs(1), 'tcp', net2.sliverAddress, 22, { ms: BLOCKED_MS })).toBe(blocked);
    expect(await connect(sliverNs(2), 'tcp', net1.sliverAddress, 22, { ms: BLOCKED_MS })).toBe(blocked);
    // the node's own services, on the public address and on the sliver's gateway: dropped
    expect(await connect(sliverNs(1), 'tcp', PUBLIC, 8080, { ms: BLOCKED_MS })).toBe(blocked);
    expect(await connect(sliverNs(1), 'tcp', net1.gateway, 8080, { ms: BLOCKED_MS })).toBe(blocked);
    expect(await connect(sliverNs(1), 'tcp', net2.gateway, 8080, { ms: BLOCKED_MS })).toBe(blocked);
    expect(await connect(NET, 'tcp', PUBLIC, 8080)).toBe(`node tcp 8080 from ${NET_ADDR}`); // the server is there
    // ping to its own gateway only
    expect(await tryRun('ip', ['netns', 'exec', sliverNs(1), 'busybox', 'ping', '-c', '1', '-W', '1', net1.gateway])).not.toBeNull();
    expect(await tryRun('ip', ['netns', 'exec', sliverNs(1), 'busybox', 'ping', '-c', '1', '-W', '1', PUBLIC])).toBeNull();
    // through the public window, a sliver reaches another sliver's sshd (hairpin)
    expect(await connect(sliverNs(1), 'tcp', PUBLIC, 20010)).toBe(`sliver-2 tcp 22 from ${net1.sliverAddress}`);
    // the internet cannot address a sliver's private address directly, even with a route to it
    await run('ip', ['-n', NET, 'route', 'add', SUBNET, 'via', PUBLIC]);
    expect(await connect(NET, 'tcp', net1.sliverAddress, 22, { ms: BLOCKED_MS })).toBe(blocked);
    // a sliver cannot send with another source address (one-way UDP, so routing can't hide it)
    const seen = (): number => (serverLog.get('net') ?? '').split('\n').filter((l) => l.startsWith('seen udp')).length;
    expect(await connect(sliverNs(1), 'udp', NET_ADDR, 9001)).toBe(`net udp 9001 from ${PUBLIC}`);
    const before = seen();
    await run('ip', ['-n', sliverNs(1), 'addr', 'add', '10.200.9.9/32', 'dev', 'eth0']);
    expect(await connect(sliverNs(1), 'udp', NET_ADDR, 9001, { ms: BLOCKED_MS, from: '10.200.9.9' })).toBe(blocked);
    await run('ip', ['-n', sliverNs(1), 'addr', 'del', '10.200.9.9/32', 'dev', 'eth0']);
    expect(seen()).toBe(before);
  }, 20_000);

  it('re-applying the same list leaves the same table', async () => {
    const before = await listTable();
    await driver.apply([s2, s1]);
    await driver.apply([s1, s2]);
    expect(await listTable()).toBe(before);
    expect(before).toContain(`"${net1.hostIf}" . 10.200.0.2`);
    expect(before).toContain(`"${net2.hostIf}" . 10.200.0.6`);
    expect(await connect(NET, 'tcp', PUBLIC, 20000)).toBe(`sliver-1 tcp 22 from ${NET_ADDR}`);
  });

  it('finds devices leaked by a crash (attached, never applied), which get nothing until applied', async () => {
    const s3 = spec(3);
    const net3 = await driver.attach(s3);
    await plugIn(net3, sliverNs(3));
    expect(await driver.listAttached()).toEqual([s1.id, s2.id, s3.id].sort());
    // fail closed: a sliver device missing from the table reaches nothing and nothing reaches it
    expect(await connect(sliverNs(3), 'tcp', NET_ADDR, 9000, { ms: BLOCKED_MS })).toBe('ERR timeout');
    expect(await connect(NET, 'tcp', PUBLIC, 20020)).toBe('ERR ECONNREFUSED');
    // the agent's cleanup: detach what it does not want; detach is idempotent
    await driver.detach(s3.id);
    await driver.detach(s3.id);
    expect(await driver.listAttached()).toEqual([s1.id, s2.id].sort());
    expect(await tryRun('ip', ['-n', sliverNs(3), 'link', 'show', 'eth0'])).toBeNull(); // the peer went with it
  });

  it('gives a KVM sliver a tap device with its address and no peer', async () => {
    const s4 = spec(4, 'tap');
    const net4 = await driver.attach(s4);
    expect(net4).toMatchObject({ peerIf: null, hostAddress: '10.200.0.13', sliverAddress: '10.200.0.14' });
    const link = JSON.parse((await run('ip', ['-n', NODE, '-d', '-j', 'addr', 'show', 'dev', net4.hostIf])).stdout) as Array<{
      linkinfo?: { info_kind?: string; info_data?: { type?: string } };
      addr_info: Array<{ family: string; local: string; prefixlen: number }>;
    }>;
    expect(link[0]?.linkinfo).toMatchObject({ info_kind: 'tun', info_data: { type: 'tap' } });
    expect(link[0]?.addr_info.filter((a) => a.family === 'inet')).toMatchObject([{ local: '10.200.0.13', prefixlen: 30 }]);
    await driver.apply([s1, s2, s4]);
    expect(await listTable()).toContain(`"${net4.hostIf}" . 10.200.0.14`);
    await driver.detach(s4.id);
    await driver.apply([s1, s2]);
    expect(await nodeLinks()).not.toContain(net4.hostIf);
  });

  it('adopts its own half-made device, refuses a name another sliver holds, and follows a change of kind', async () => {
    const link = async (name: string) =>
      (JSON.parse((await run('ip', ['-n', NODE, '-d', '-j', 'addr', 'show', 'dev', name])).stdout) as Array<{ ifalias?: string; linkinfo?: { info_kind?: string } }>)[0];
    // crash between `ip link add` and `alias`: same name, no alias → attach adopts it
    const half = spec(5);
    const halfNames = deviceNames(half.id);
    await run('ip', ['-n', NODE, 'link', 'add', halfNames.hostIf, 'type', 'veth', 'peer', 'name', halfNames.peerIf]);
    expect(await driver.attach(half)).toMatchObject({ hostIf: halfNames.hostIf, hostAddress: '10.200.0.17' });
    expect(await driver.listAttached()).toContain(half.id);
    // a clash: the name this id hashes to carries another sliver's alias → refused, and detach leaves it
    const victim = spec(6);
    const { hostIf } = deviceNames(victim.id);
    await run('ip', ['-n', NODE, 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'plnetclash']);
    await run('ip', ['-n', NODE, 'link', 'set', 'dev', hostIf, 'alias', `planetlite-sliver:${s1.id}`]);
    await expect(driver.attach(victim)).rejects.toThrow(/is taken by/);
    await driver.detach(victim.id);
    expect((await link(hostIf))?.ifalias).toBe(`planetlite-sliver:${s1.id}`);
    await run('ip', ['-n', NODE, 'link', 'del', 'dev', hostIf]);
    // tap → veth for the same sliver
    const kvm = spec(7, 'tap');
    await driver.attach(kvm);
    const lxc = await driver.attach({ ...kvm, kind: 'veth' });
    expect((await link(lxc.hostIf))?.linkinfo?.info_kind).toBe('veth');
    expect((await link(lxc.peerIf!))?.ifalias).toBe(`planetlite-sliver:${kvm.id}`);
    await driver.detach(kvm.id);
    await driver.detach(half.id);
    expect((await nodeLinks()).filter((n) => /^pl[hs]/.test(n)).sort()).toEqual([net1.hostIf, net2.hostIf].sort());
  });

  it('applies only the changes: a moved window takes, and a table changed by hand is written whole', async () => {
    const moved = { ...s2, ports: { first: 20100, last: 20109 } };
    await driver.apply([s1, moved]);
    expect(await connect(NET, 'tcp', PUBLIC, 20100)).toBe(`sliver-2 tcp 22 from ${NET_ADDR}`);
    expect(await connect(NET, 'tcp', PUBLIC, 20010)).toBe('ERR ECONNREFUSED');
    // Someone deletes sliver 2's entries: the next change cannot be applied as a change (the
    // entries it deletes are gone), so the whole table is written and both windows work again.
    await run('ip', ['netns', 'exec', NODE, 'nft', 'flush', 'map', 'inet', 'planetlite', 'sliver_ssh']);
    expect(await connect(NET, 'tcp', PUBLIC, 20000)).toBe('ERR ECONNREFUSED');
    await driver.apply([s1, s2]);
    expect(await connect(NET, 'tcp', PUBLIC, 20000)).toBe(`sliver-1 tcp 22 from ${NET_ADDR}`);
    expect(await connect(NET, 'tcp', PUBLIC, 20010)).toBe(`sliver-2 tcp 22 from ${NET_ADDR}`);
    // A flushed table is no failed change (nothing to delete): `whole` is how the agent repairs it.
    await run('ip', ['netns', 'exec', NODE, 'nft', 'flush', 'table', 'inet', 'planetlite']);
    await driver.apply([s1, s2], { whole: true });
    expect(await connect(NET, 'tcp', PUBLIC, 20013)).toBe(`sliver-2 tcp 20013 from ${NET_ADDR}`);
    expect(await connect(sliverNs(1), 'tcp', '10.200.0.6', 22, { ms: BLOCKED_MS })).toBe('ERR timeout');
  });

  it("detach + apply removes the sliver's entries, devices and window; the other sliver keeps working", async () => {
    await driver.detach(s2.id);
    await driver.apply([s1]);
    const table = await listTable();
    expect(table).not.toContain(net2.hostIf);
    expect(table).not.toContain('10.200.0.6');
    expect(table).toContain(`"${net1.hostIf}" . 10.200.0.2`);
    expect(await nodeLinks()).not.toContain(net2.hostIf);
    expect(await driver.listAttached()).toEqual([s1.id]);
    expect(await connect(NET, 'tcp', PUBLIC, 20010)).toBe('ERR ECONNREFUSED');
    expect(await connect(NET, 'tcp', PUBLIC, 20000)).toBe(`sliver-1 tcp 22 from ${NET_ADDR}`);
  });

  it("sets its sysctls itself when the node's namespace is its own (no netns setting: an agent on a real node)", async () => {
    // A fresh namespace of the node process's own (unshare), gone with it: the driver in it has no netns setting.
    const script = `
      import { NftablesDriver } from '@planetlite/network';
      import { readFileSync } from 'node:fs';
      const d = new NftablesDriver({ publicAddress: '${PUBLIC}', sliverSubnet: '${SUBNET}' });
      const net = await d.attach({ id: '${randomUUID()}', slot: 0, ports: { first: 20000, last: 20009 }, kind: 'veth' });
      await d.apply([]);
      process.stdout.write(JSON.stringify([readFileSync('/proc/sys/net/ipv4/neigh/' + net.hostIf + '/retrans_time_ms', 'utf8').trim(), readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim()]));
      process.exit(0);`;
    const out = await run('unshare', ['--net', process.execPath, '--input-type=module', '-e', script], { cwd: join(import.meta.dirname, '..') });
    expect(JSON.parse(out.stdout)).toEqual(['100', '1']);
  });

  it('teardown leaves no table and no devices, and can run again', async () => {
    await driver.teardown();
    await driver.teardown();
    expect((await run('ip', ['netns', 'exec', NODE, 'nft', 'list', 'tables'])).stdout).not.toContain('planetlite');
    expect((await nodeLinks()).filter((n) => /^pl[hs]/.test(n))).toEqual([]);
    expect(await driver.listAttached()).toEqual([]);
    expect(await connect(NET, 'tcp', PUBLIC, 20000)).toBe('ERR ECONNREFUSED');
  });
});
