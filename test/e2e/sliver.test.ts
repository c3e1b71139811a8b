// End to end on one node: a real registry, a real agent with a btrfs pool on a loop file, LXC
// and nftables inside a network namespace that stands for the node, and an experimenter in
// another namespace who sshes through the forwarded port into the sliver.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PlanetLiteClient, Sliver } from '@planetlite/api';
import { run } from '@planetlite/host';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

let node: OneNode;
let admin: PlanetLiteClient;
let PUBLIC: string;
let NODE: string;
let NET: string;
let dir: string;
let key: string;
let nodeId: string;

const sshFromNet = (port: number, user: string, command: string, identity?: string) => node.ssh(port, user, command, identity);

beforeAll(async () => {
  node = await startOneNode({ site: 'e2e', octets: [100, 45], sliverSubnet: (o) => `10.${200 + (o % 50)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
  ({ admin, publicAddress: PUBLIC, ns: NODE, net: NET, dir, key, nodeId } = node);
}, 180_000);

afterAll(async () => {
  await node?.close();
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
    // Its root is layered (the default): an overlay over the image, mounted on the host. What
    // the agent wrote into it from the host is the sliver's own (root's, the slice user's).
    const rootfs = join(node.stateDir, 'pool', 'slivers', sliver.id, 'rootfs');
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === rootfs);
    expect(mounts).toHaveLength(1);
    expect(mounts[0]).toContain(' - overlay ');
    expect(sshFromNet(sliver.ports.first, 'root', 'stat -c %u:%g /etc/slicename /etc/ssh/ssh_host_ed25519_key /home/e2e_hello/.ssh/authorized_keys /etc/hostname')).toBe(['0:0', '0:0', '1000:1000', '0:0'].join('\n'));
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
    const probe = () => sshFromNet(sliver.ports.first, 'root', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us; cut -d" " -f22 /proc/1/stat');
    const [memBefore, , quotaBefore, initBefore] = probe().split('\n');
    expect(Number(memBefore)).toBe((await admin.getSlice('e2e_hello')).resources.memory_mb * 1024 * 1024);
    expect(quotaBefore).toBe('-1');
    const slice = await admin.updateSlice('e2e_hello', { resources: { memory_mb: 96, cpu_shares: 300, cpu_cap_percent: 50 } });
    expect(slice.resources).toMatchObject({ memory_mb: 96, cpu_shares: 300, cpu_cap_percent: 50 });
    const after = await until('the new limits inside the sliver', async () => {
      const lines = probe().split('\n');
      return lines[0] === String(96 * 1024 * 1024) && lines[1] === '300' && lines[2] === '50000' ? lines : null;
    }, 60_000); // a whole build (root, link, define, lifecycle, then the limits): slow on a loaded machine
    expect(after[3]).toBe(initBefore); // the same init: not restarted
    // A busy loop under a 50 % cap gets about half a cpu (cpu time over wall time, from inside).
    const share = Number(sshFromNet(sliver.ports.first, 'root', [
      'a=$(cat /sys/fs/cgroup/cpuacct/cpuacct.usage); t0=$(cut -d" " -f1 /proc/uptime | tr -d .)',
      "timeout 3 sh -c 'while :; do :; done'",
      'b=$(cat /sys/fs/cgroup/cpuacct/cpuacct.usage); t1=$(cut -d" " -f1 /proc/uptime | tr -d .)',
      'echo $(( (b - a) / 100000 / (t1 - t0) ))', // ns over centiseconds, in percent
    ].join('; ')));
    expect(share).toBeGreaterThan(30);
    expect(share).toBeLessThanOrEqual(55);
    // Lifting the cap reaches the running sliver too.
    await admin.updateSlice('e2e_hello', { resources: { cpu_cap_percent: null } });
    await until('the cap to be lifted', async () => (probe().split('\n')[2] === '-1' ? true : null), 30_000);
  }, 120_000);

  it('shows an error while nothing listens on its port 22, and none once its sshd is back', async () => {
    // Run in the sliver from the host, as the agent runs lxc (the command socket is in the node's namespace).
    const inSliver = (...argv: string[]) => run('nsenter', [`--net=/run/netns/${NODE}`, '--', 'lxc-attach', '-P', join(dir, 'agent', 'lxc'), '-n', `sl-${sliver.id}`, '--', ...argv]);
    // The image's init respawns `sshd -D`: with its binary moved away, a restart brings up no sshd.
    await inSliver('mv', '/usr/sbin/sshd', '/usr/sbin/sshd.off');
    await admin.sliverAction(sliver.id, 'restart');
    const silent = await until('the sliver to show that nothing listens on port 22', async () => {
      const s = await admin.getSliver(sliver.id);
      return s.state === 'running' && s.error?.startsWith('nothing listens on port 22 inside the sliver') ? s : null;
    }, 120_000); // the 30 s grace after the start, then the next clock report
    expect(silent.error).toContain(`planetlite sliver log ${sliver.id}`);
    expect(() => sshFromNet(sliver.ports.first, 'e2e_hello', 'true')).toThrow(/refused/);
    // sshd back: init's next respawn brings it up, and the next clock report finds it listening.
    await inSliver('mv', '/usr/sbin/sshd.off', '/usr/sbin/sshd');
    const back = await until('the error to go', async () => {
      const s = await admin.getSliver(sliver.id);
      return s.state === 'running' && s.error === null ? s : null;
    }, 60_000);
    expect(back.error).toBeNull();
    expect(sshFromNet(sliver.ports.first, 'e2e_hello', 'cat /etc/slicename')).toBe('e2e_hello');
  }, 240_000);

  it('keeps running while its agent is away, and a restarted agent tears down what was deleted meanwhile', async () => {
    await node.stopAgent();
    expect(sshFromNet(sliver.ports.first, 'e2e_hello', 'cat /etc/slicename')).toBe('e2e_hello');
    await admin.deleteSliver(sliver.id);
    expect((await admin.getSliver(sliver.id)).state).toBe('deleting');

    await node.startAgent();
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
