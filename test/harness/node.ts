// A node of a test testbed on one machine: a network namespace standing for the node, joined by
// a veth to a peer (another namespace, or this machine itself), and the teardown of everything
// an agent may have left there (slivers, nftables table, pool mount and loop device).
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { run, tryRun } from '@planetlite/host';
import { readLedger } from '@planetlite/agent';
import { deviceNames, ifbName } from '@planetlite/network';

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
  // VM slivers: their qemu runs detached, its files under STATE_DIR/vm.
  await tryRun('pkill', ['-KILL', '-f', `qemu-system.*${join(opts.stateDir, 'vm')}/`]);
  // Their cgroups (lxc.payload.sl-ID, as a container's) go once the killed qemu has gone.
  const vmIds = (await readdir(join(opts.stateDir, 'vm')).catch(() => [] as string[])).filter((n) => /^[0-9a-f-]{36}$/.test(n));
  for (let tries = 0; tries < 20 && vmIds.length; tries++) {
    const dirs = (await readdir('/sys/fs/cgroup').catch(() => [] as string[])).flatMap((h) => vmIds.map((id) => join('/sys/fs/cgroup', h, `lxc.payload.sl-${id}`)));
    const left = (await Promise.all(dirs.map(async (d) => ((await tryRun('rmdir', [d])) === null && (await stat(d).then(() => true, () => false)) ? d : null)))).filter(Boolean);
    if (!left.length) break;
    await new Promise((r) => setTimeout(r, 100));
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

/**
 * What an agent with this state dir left on its node for the given slivers (for every sliver it
 * shows when ids is omitted): LXC containers in its lxcpath, sliver links in the node namespace,
 * sliver chains or devices in its nftables table, roots (and half-made `.partial` roots) in its
 * pool, records in its ledger, and LXC's cgroups (lxc.payload.sl-ID, lxc.monitor.sl-ID) in every
 * cgroup hierarchy. One line per thing found: [] means clean.
 */
export async function sliverLeftovers(opts: { stateDir: string; ns: string; ids?: readonly string[] }): Promise<string[]> {
  const { stateDir, ns } = opts;
  const uuid = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
  const mine = (id: string | undefined | null): id is string => !!id && (!opts.ids || opts.ids.includes(id));
  const found: string[] = [];
  const seen = new Set<string>(opts.ids ?? []);
  const note = (id: string, what: string) => {
    seen.add(id);
    found.push(what);
  };

  const lxcPath = join(stateDir, 'lxc');
  for (const name of await readdir(lxcPath).catch(() => [] as string[])) {
    const id = /^sl-(.*)$/.exec(name)?.[1];
    if (mine(id)) note(id, `lxc: container directory ${join(lxcPath, name)}`);
  }
  // Running containers (their directory may be gone); defined ones are the directories above.
  // Not a plain lxc-ls: it loads every config, opening the log each names, and so makes the
  // directory of a container the agent is removing at that moment again.
  for (const name of (await tryRun('lxc-ls', ['--active', '-P', lxcPath]))?.stdout.split(/\s+/).filter(Boolean) ?? []) {
    const id = /^sl-(.*)$/.exec(name)?.[1];
    if (mine(id)) note(id, `lxc: lxc-ls --active -P ${lxcPath} lists ${name}`);
  }

  const links = JSON.parse((await tryRun('ip', ['-n', ns, '-d', '-j', 'link', 'show']))?.stdout || '[]') as Array<{ ifname?: string; ifalias?: string }>;
  const byName = new Map((opts.ids ?? []).flatMap((id) => [...Object.values(deviceNames(id)), ifbName(id)].map((n) => [n, id] as const)));
  for (const l of links) {
    if (!l.ifname || !/^pl[hsi][0-9a-f]{12}$/.test(l.ifname)) continue;
    const id = /^planetlite-sliver:(.*)$/.exec(l.ifalias ?? '')?.[1] ?? byName.get(l.ifname);
    if (opts.ids ? mine(id) : true) note(id ?? l.ifname, `link: ${l.ifname} (alias ${l.ifalias ?? 'none'}) in namespace ${ns}`);
  }

  const table = (await tryRun('ip', ['netns', 'exec', ns, 'nft', 'list', 'table', 'inet', 'planetlite']))?.stdout ?? '';
  for (const id of new Set([...table.matchAll(new RegExp(`sliver_(${uuid.source})`, 'g'))].map((m) => m[1]!))) {
    if (mine(id)) note(id, `nftables: chain sliver_${id} in table inet planetlite of ${ns}`);
  }
  for (const dev of new Set([...table.matchAll(/"(plh[0-9a-f]{12})"/g)].map((m) => m[1]!))) {
    const id = byName.get(dev);
    if (opts.ids ? mine(id) : true) note(id ?? dev, `nftables: device ${dev} in table inet planetlite of ${ns}`);
  }

  const slivers = join(stateDir, 'pool', 'slivers');
  for (const name of await readdir(slivers).catch(() => [] as string[])) {
    const id = uuid.exec(name)?.[0];
    if (opts.ids ? mine(id) : true) note(id ?? name, `pool: ${join(slivers, name)}`);
  }
  const subvolumes = (await tryRun('btrfs', ['subvolume', 'list', join(stateDir, 'pool')]))?.stdout ?? '';
  for (const line of subvolumes.split('\n')) {
    const path = / path (slivers\/.*)$/.exec(line)?.[1];
    if (!path) continue;
    const id = uuid.exec(path)?.[0];
    if (opts.ids ? mine(id) : true) note(id ?? path, `pool: btrfs subvolume ${path}`);
  }

  for (const r of readLedger(stateDir)) if (mine(r.id)) note(r.id, `ledger: ${r.id} in ${join(stateDir, 'ledger')}`);

  // Cgroups: of the slivers asked about, or of every sliver found above.
  const hierarchies = ['/sys/fs/cgroup', ...(await readdir('/sys/fs/cgroup', { withFileTypes: true }).catch(() => [])).filter((e) => e.isDirectory()).map((e) => join('/sys/fs/cgroup', e.name))];
  for (const id of seen) {
    if (!uuid.test(id)) continue;
    for (const h of hierarchies) {
      for (const prefix of ['lxc.payload.', 'lxc.monitor.']) {
        const dir = join(h, `${prefix}sl-${id}`);
        if (await stat(dir).then((s) => s.isDirectory(), () => false)) found.push(`cgroup: ${dir}`);
      }
    }
  }
  return found;
}
