// The Debian 12 image end to end: built from its recipe (debootstrap from this machine's
// configured Debian mirror), imported on a node, run as a slice's sliver through the registry
// and the agent, reached with ssh through the forwarded port, and deleted without a trace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { PlanetLiteClient, Sliver } from '@planetlite/api';
import { run } from '@planetlite/host';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

let node: OneNode;
let admin: PlanetLiteClient;
let NODE: string;
let dir: string;
let nodeId: string;

const sshFromNet = (port: number, user: string, command: string) => node.ssh(port, user, command);

beforeAll(async () => {
  // Other e2e files use 198.18.100-199 and .210-249, and sliver subnets 10.100-139 and 10.200-249.
  node = await startOneNode({ site: 'deb', octets: [20, 10], sliverSubnet: (o) => `10.${150 + (o % 10)}.0.0/24`, image: { name: 'debian12', file: 'debian12.tar.zst' } });
  ({ admin, ns: NODE, dir, nodeId } = node);
}, 960_000);

afterAll(async () => {
  await node?.close();
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
