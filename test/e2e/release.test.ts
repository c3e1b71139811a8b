// `planetlite-agent release` on a real node: a stopped agent leaves its sliver running (the
// process tree shows why: LXC's monitor and the sliver are not the agent's children), release
// --keep-data takes everything off the host but the pool file and the state, `run` builds the
// sliver again from them, and a plain release leaves nothing: no container, link, nftables
// table, mount, loop device, pool file or state dir.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sliver } from '@planetlite/api';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';
import { sliverLeftovers } from '../harness/node.ts';

const AGENT = fileURLToPath(new URL('../../apps/agent/bin/planetlite-agent.js', import.meta.url));

let node: OneNode;
let sliver: Sliver;

beforeAll(async () => {
  node = await startOneNode({ site: 'rel', octets: [10, 5], sliverSubnet: (o) => `10.${60 + (o % 5)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
}, 180_000);

afterAll(async () => {
  await node?.close();
}, 120_000);

const lxcPath = () => join(node.stateDir, 'lxc');
const inNs = (cmd: string, args: string[]) => execFileSync('nsenter', [`--net=/run/netns/${node.ns}`, cmd, ...args], { encoding: 'utf8' });
const release = (...args: string[]) => execFileSync(process.execPath, [AGENT, 'release', '--state-dir', node.stateDir, ...args], { encoding: 'utf8', timeout: 120_000 });
const ppid = (pid: number) => Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

/** Everything of the node's that is still on the host, one line each; [] when released. */
function held(): string[] {
  const out: string[] = [];
  const containers = inNs('lxc-ls', ['-P', lxcPath()]).trim();
  if (containers) out.push(`lxc-ls: ${containers}`);
  for (const l of JSON.parse(execFileSync('ip', ['-n', node.ns, '-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string }>)
    if (/^pl[hsi]/.test(l.ifname)) out.push(`link ${l.ifname}`);
  const tables = execFileSync('ip', ['netns', 'exec', node.ns, 'nft', 'list', 'tables'], { encoding: 'utf8' });
  if (/planetlite/.test(tables)) out.push(`nft: ${tables.trim()}`);
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) if (line.includes(node.stateDir)) out.push(`mount: ${line}`);
  const loops = execFileSync('losetup', ['-j', join(node.dir, 'pool.img')], { encoding: 'utf8' }).trim();
  if (loops) out.push(`loop: ${loops}`);
  return out;
}

describe('releasing a node', () => {
  it('builds a sliver whose processes are not children of the agent', async () => {
    sliver = await node.runningSliver('rel_one');
    // lxc-start -d daemonises: its monitor is re-parented (to init or a subreaper), the sliver's
    // init is the monitor's child. So only the agent's cgroup ties them to the agent (KillMode).
    const init = Number(inNs('lxc-info', ['-P', lxcPath(), '-n', `sl-${sliver.id}`, '-pH']).trim());
    const monitor = ppid(init);
    expect(readFileSync(`/proc/${monitor}/cmdline`, 'utf8')).toMatch(/^\[lxc monitor\]/);
    expect(ppid(monitor)).not.toBe(process.pid);
    const cgroups = readFileSync(`/proc/${init}/cgroup`, 'utf8');
    expect(cgroups).toMatch(new RegExp(`lxc\\.payload\\.sl-${sliver.id}`));
    console.log(`sliver init ${init} <- [lxc monitor] ${monitor} <- ${ppid(monitor)} (agent ${process.pid}); init's cgroups:\n${cgroups}`);
  }, 180_000);

  it('keeps the sliver running after a plain stop of the agent', async () => {
    await node.stopAgent();
    expect(node.ssh(sliver.ports.first, 'rel_one', 'cat /etc/slicename')).toBe('rel_one');
    expect(held().length).toBeGreaterThanOrEqual(4); // container, links, table, mount, loop
  }, 60_000);

  it('release --keep-data stops the sliver, gives back every host resource and keeps the disks', async () => {
    const out = release('--keep-data');
    expect(out).toMatch(/released: 1 sliver\(s\) stopped/);
    expect(held()).toEqual([]);
    expect(existsSync(join(node.dir, 'pool.img'))).toBe(true);
    expect(existsSync(join(node.stateDir, 'node.json'))).toBe(true);
  }, 120_000);

  it('run builds the sliver again from the kept pool and ledger', async () => {
    await node.startAgent();
    const out = await until('ssh after the rebuild', async () => node.ssh(sliver.ports.first, 'rel_one', 'cat /etc/slicename'), 90_000);
    expect(out).toBe('rel_one');
  }, 120_000);

  it('a plain release leaves nothing on the host, the pool file and the state dir included', async () => {
    await node.stopAgent();
    const t0 = performance.now();
    const out = release();
    console.log(`release: ${Math.round(performance.now() - t0)} ms\n${out}`);
    expect(out).toMatch(/state dir .* deleted/);
    expect(held()).toEqual([]);
    expect(existsSync(join(node.dir, 'pool.img'))).toBe(false);
    expect(existsSync(node.stateDir)).toBe(false);
    expect(await sliverLeftovers({ stateDir: node.stateDir, ns: node.ns, ids: [sliver.id] })).toEqual([]);
    // Nothing left to release: a clear one-line error, exit 1.
    expect(() => execFileSync(process.execPath, [AGENT, 'release', '--state-dir', node.stateDir], { encoding: 'utf8', stdio: 'pipe' })).toThrow(/does not exist: nothing to release/);
  }, 120_000);
});
