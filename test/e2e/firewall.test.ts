// A node with a firewall of its own: a forward chain with policy drop in another nftables table
// (as hardened hosts have; Docker does the same to iptables' FORWARD) drops slivers' traffic
// whatever the agent's table accepts. The agent names the chain and the fix; with the fix run,
// ssh reaches the sliver again. An iptables-nft FORWARD chain beside DOCKER-USER gets Docker's fix.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import type { Sliver } from '@planetlite/api';
import { forwardDrops } from '@planetlite/agent';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

let node: OneNode;
let sliver: Sliver;
const nft = (...args: string[]) => execFileSync('nsenter', [`--net=/run/netns/${node.ns}`, 'nft', ...args], { encoding: 'utf8' });

beforeAll(async () => {
  node = await startOneNode({ site: 'fw', octets: [95, 5], sliverSubnet: (o) => `10.${45 + (o % 5)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
}, 180_000);

afterAll(async () => {
  await node?.close(); // deleting the namespace deletes its tables
}, 120_000);

describe('beside a default-drop forward policy', () => {
  it('a sliver answers ssh before the host firewall comes', async () => {
    sliver = await node.runningSliver('fw_one');
    expect(await forwardDrops(node.ns)).toEqual([]);
  }, 180_000);

  it('the drop policy cuts it off, and the agent names the chain and the fix', async () => {
    nft('add', 'table', 'inet', 'hostfw');
    nft('add', 'chain', 'inet', 'hostfw', 'forward', '{ type filter hook forward priority 0; policy drop; }');
    expect(() => node.ssh(sliver.ports.first, 'fw_one', 'true')).toThrow();
    const drops = await forwardDrops(node.ns);
    expect(drops).toEqual([{ chain: 'inet hostfw forward', fix: 'nft insert rule inet hostfw forward iifname "plh*" accept; nft insert rule inet hostfw forward oifname "plh*" accept' }]);
    // The fix as an admin pastes it.
    for (const cmd of drops[0]!.fix.split('; ')) execFileSync('ip', ['netns', 'exec', node.ns, 'sh', '-c', cmd]);
    expect(await until('ssh through the fixed firewall', async () => node.ssh(sliver.ports.first, 'fw_one', 'cat /etc/slicename'), 30_000)).toBe('fw_one');
  }, 120_000);

  it("Docker's FORWARD DROP gets Docker's fix (DOCKER-USER)", async () => {
    nft('add', 'table', 'ip', 'filter');
    nft('add', 'chain', 'ip', 'filter', 'FORWARD', '{ type filter hook forward priority 0; policy drop; }');
    nft('add', 'chain', 'ip', 'filter', 'DOCKER-USER');
    expect((await forwardDrops(node.ns)).find((d) => d.chain === 'ip filter FORWARD')?.fix).toBe('iptables -I DOCKER-USER -i plh+ -j ACCEPT; iptables -I DOCKER-USER -o plh+ -j ACCEPT');
    nft('delete', 'table', 'ip', 'filter');
  }, 60_000);
});
