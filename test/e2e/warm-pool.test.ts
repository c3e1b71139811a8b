// A node with a warm pool (warm-pool.ts): spare slivers of its image kept built and running, handed
// out to new slivers through the registry (which gives a new sliver a spare's id). A spare handed
// to one slice shows only that slice's user, keys and files, a deleted one is never handed out
// again, the pool refills behind the hand-outs, and a reset gives a fresh root.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Sliver } from '@planetlite/api';
import { run } from '@planetlite/host';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

let node: OneNode;
let bobKey: string;
const SIZE = 2;

/** The spares the agent offers now. */
const spares = () => node.agent!.reconciler!.pool!.spares().map((s) => s.id);
// In the node's namespace: LXC's command sockets are abstract, one set per network namespace.
const containers = async () => (await run('ip', ['netns', 'exec', node.ns, 'lxc-ls', '-P', join(node.stateDir, 'lxc'), '--running', '-1'])).stdout.split('\n').filter(Boolean);

/** A full pool: SIZE spares up, as many containers running as spares and slivers. */
async function fullPool(slivers: number): Promise<string[]> {
  return until('the warm pool to be full', async () => {
    const ids = spares();
    return ids.length === SIZE && (await containers()).length === SIZE + slivers ? ids : null;
  }, 120_000);
}

/** A sliver of the slice, handed out from a full pool on a node running `slivers` others. */
async function handedOut(slice: string, slivers: number): Promise<Sliver> {
  const offered = await fullPool(slivers);
  // The registry knows the spares from the agent's reports.
  await node.agent!.report();
  const created = await node.admin.createSliver(slice, node.nodeId);
  expect(offered).toContain(created.id);
  const sliver = await until(`sliver of ${slice} to run`, async () => {
    const s = await node.admin.getSliver(created.id);
    if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
    return s.state === 'running' ? s : null;
  }, 60_000);
  await until(`sliver of ${slice} to answer ssh`, async () => node.ssh(sliver.ports.first, slice, 'cat /etc/slicename') === slice, 30_000);
  return sliver;
}

beforeAll(async () => {
  node = await startOneNode({ site: 'wp', octets: [145, 5], sliverSubnet: (o) => `10.${245 + (o % 5)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' }, agentSettings: { warm_pool_image: 'tiny', warm_pool_size: SIZE } });
  // A second experimenter, member of wp_b only, with a key of her own.
  bobKey = join(node.dir, 'bob_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bob', '-f', bobKey]);
  const bob = { email: 'bob@wp.test', password: 'bob-password-1', name: 'Bob', site: 'wp', roles: ['user' as const] };
  const bobId = (await node.admin.createUser(bob)).id;
  await node.admin.addKey(bobId, readFileSync(`${bobKey}.pub`, 'utf8'));
  for (const name of ['wp_a', 'wp_b', 'wp_c']) await node.admin.createSlice({ name, description: 'warm pool', url: 'https://example.org', image: 'tiny' });
  await node.admin.addMember('wp_b', bobId);
}, 240_000);

afterAll(async () => {
  await node?.close();
}, 120_000);

describe('a warm pool of two', () => {
  let a: Sliver;
  let b: Sliver;

  it('is built and started in the background, in no slice and behind no port', async () => {
    const ids = await fullPool(0);
    const table = (await run('ip', ['netns', 'exec', node.ns, 'nft', 'list', 'table', 'inet', 'planetlite'])).stdout;
    for (const id of ids) expect(table).not.toContain(id);
    // The registry shows the node's pool from its report.
    await node.agent!.report();
    expect((await node.admin.getNode(node.nodeId)).spares).toBe(SIZE);
  }, 180_000);

  it('hands spares out to two slices: each sees only its own slice, user, keys and files', async () => {
    a = await handedOut('wp_a', 0);
    b = await handedOut('wp_b', 1);
    for (const [s, slice] of [[a, 'wp_a'], [b, 'wp_b']] as const) {
      const [name, host, homes, uid] = node.ssh(s.ports.first, slice, 'cat /etc/slicename; hostname; ls /home; id -un').split('\n');
      expect({ name, host, homes, uid }).toEqual({ name: slice, host: slice, homes: slice, uid: slice });
    }
    // Bob's key opens wp_b (as the slice and as root), not wp_a.
    expect(node.ssh(b.ports.first, 'wp_b', 'id -un', bobKey)).toBe('wp_b');
    expect(() => node.ssh(a.ports.first, 'wp_a', 'true', bobKey)).toThrow();
    expect(() => node.ssh(a.ports.first, 'root', 'true', bobKey)).toThrow();
    // Files one slice writes are not in the other's sliver.
    node.ssh(a.ports.first, 'root', 'echo a-secret > /root/secret; echo a > /tmp/a');
    node.ssh(b.ports.first, 'root', 'echo b-secret > /root/secret; echo b > /tmp/b');
    expect(node.ssh(b.ports.first, 'root', 'cat /root/secret; cat /tmp/a 2>/dev/null; true')).toBe('b-secret');
    // Each has its own host key.
    const hostKey = (s: Sliver) => node.ssh(s.ports.first, 'root', 'cat /etc/ssh/ssh_host_ed25519_key.pub').split(' ')[1];
    expect(hostKey(a)).not.toBe(hostKey(b));
  }, 240_000);

  it('is refilled behind the hand-outs with new spares, never with a handed-out one', async () => {
    const ids = await fullPool(2);
    expect(ids).not.toContain(a.id);
    expect(ids).not.toContain(b.id);
  }, 180_000);

  it('a sliver reset from the pool is a fresh root of the image, still its slice\'s', async () => {
    await node.admin.sliverAction(a.id, 'reset');
    await until('the reset sliver to answer ssh without the file', async () => {
      const out = await node.sshAsync(a.ports.first, 'root', 'cat /etc/slicename; test -e /root/secret && echo kept || echo fresh').catch(() => null);
      return out === 'wp_a\nfresh' ? out : null;
    }, 90_000);
    expect(node.ssh(a.ports.first, 'wp_a', 'hostname; ls /home')).toBe('wp_a\nwp_a');
  }, 120_000);

  it('a deleted sliver goes whole, and the next slice gets a new spare without any of its files', async () => {
    await node.admin.deleteSliver(b.id);
    await until('the registry to forget wp_b\'s sliver', async () => node.admin.getSliver(b.id).then(() => false, () => true), 60_000);
    const c = await handedOut('wp_c', 1);
    expect(c.id).not.toBe(b.id);
    expect(node.ssh(c.ports.first, 'root', 'ls /home; cat /root/secret /tmp/a /tmp/b 2>/dev/null; true')).toBe('wp_c');
  }, 240_000);
});
