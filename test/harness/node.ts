// A node of a test testbed on one machine: a network namespace standing for the node, joined by
// a veth to a peer (another namespace, or this machine itself), and the teardown of everything
// an agent may have left there (slivers, nftables table, pool mount and loop device).
import { join } from 'node:path';
import { run, tryRun } from '@planetlite/host';

export interface NodeNamespace {
  ns: string;
  /** The node's public address (its end of the link). */
  address: string;
  /** The other end's address, in peerNs or in this machine's namespace. */
  peerAddress: string;
}

/**
 * Creates namespace `ns` (and `peerNs` unless null: then the peer end stays in this machine's own
 * namespace) joined by one veth on 198.18.<octet>.0/24: the node is .1, the peer .2.
 */
export async function makeNodeNamespace(opts: { ns: string; peerNs: string | null; octet: number; link: string }): Promise<NodeNamespace> {
  const { ns, peerNs, octet, link } = opts;
  const address = `198.18.${octet}.1`;
  const peerAddress = `198.18.${octet}.2`;
  const peerIp = (args: string[]) => run('ip', peerNs ? ['-n', peerNs, ...args] : args);
  await run('ip', ['netns', 'add', ns]);
  if (peerNs) await run('ip', ['netns', 'add', peerNs]);
  await run('ip', ['link', 'add', `${link}a`, 'netns', ns, 'type', 'veth', 'peer', 'name', `${link}b`, ...(peerNs ? ['netns', peerNs] : [])]);
  await run('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', `${link}a`]);
  await peerIp(['addr', 'add', `${peerAddress}/24`, 'dev', `${link}b`]);
  await run('ip', ['-n', ns, 'link', 'set', `${link}a`, 'up']);
  await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  await peerIp(['link', 'set', `${link}b`, 'up']);
  if (peerNs) await run('ip', ['-n', peerNs, 'link', 'set', 'lo', 'up']);
  return { ns, address, peerAddress };
}

/**
 * Removes whatever an agent with this state dir left, then the namespaces (deleting a namespace
 * deletes its veth end, and with it the peer end). Every step tolerates "already gone".
 */
export async function removeNode(opts: { stateDir: string; ns: string; peerNs?: string | null; poolFile: string }): Promise<void> {
  const lxcPath = join(opts.stateDir, 'lxc');
  for (const c of (await tryRun('lxc-ls', ['-P', lxcPath]))?.stdout.split(/\s+/).filter(Boolean) ?? []) {
    await tryRun('nsenter', [`--net=/run/netns/${opts.ns}`, 'lxc-stop', '-k', '-P', lxcPath, '-n', c]);
  }
  await tryRun('ip', ['netns', 'exec', opts.ns, 'nft', 'delete', 'table', 'inet', 'planetlite']);
  if (opts.peerNs) await tryRun('ip', ['netns', 'del', opts.peerNs]);
  await tryRun('ip', ['netns', 'del', opts.ns]);
  await tryRun('umount', ['-l', join(opts.stateDir, 'pool')]);
  for (const line of (await tryRun('losetup', ['-j', opts.poolFile]))?.stdout.split('\n') ?? []) {
    const dev = line.split(':')[0];
    if (dev) await tryRun('losetup', ['-d', dev]);
  }
}
