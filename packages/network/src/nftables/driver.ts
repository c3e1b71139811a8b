// The nftables network driver: a veth pair or tap per sliver with a private /30, and one
// `inet` table owned by the agent (MASQUERADE out, DNAT port window in, isolation). A sliver is
// entries in the table's maps; an apply sends only the entries that changed since the last one,
// and the whole table when there was none (a new process) or a change does not take.
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { NetworkError } from '../errors.js';
import { CommandError, Reverter, requireTools, run, tryRun, type RunOptions } from '@planetlite/host';
import type { NetworkCapabilities, NetworkDriver, NetworkDriverOptions, SliverCounters, SliverNet, SliverNetSpec, SliverRate } from '../driver.js';
import { parseIpv4, parseSubnet, slotAddress, type Ipv4Subnet } from '../ipv4.js';
import { ipBatch, readLinks, readLinksOf, type Link } from './devices.js';
import { ALIAS_PREFIX, DEVICE_PATTERN, deviceNames, HOST_PREFIX, IFB_PREFIX, ifbName, PEER_PREFIX, sliverId } from './names.js';
import { renderChanges, renderDeleteTable, renderRuleset, validateSpecs, type RulesetConfig } from './ruleset.js';
import { applyLimit, parseQdiscs, readCounters, shapingDrift, validateRate, type DeviceQdiscs } from './shaping.js';

/** ARP retry interval on a sliver's host-side link (the kernel default is 1000 ms). */
const ARP_RETRANS_MS = 100;

export class NftablesDriver implements NetworkDriver {
  readonly name = 'nftables';
  readonly capabilities: NetworkCapabilities;
  readonly #opts: NetworkDriverOptions;
  readonly #config: RulesetConfig;
  readonly #subnet: Ipv4Subnet;
  /** ip_forward is set once per driver; the rest of an apply is one nft transaction. */
  #forwarding = false;
  /** What the last apply left in the table; null before one, and after a failed one. */
  #applied: SliverNetSpec[] | null = null;
  #linksRead: Promise<Map<string, Link>> | null = null;
  /** Slivers whose link attach() has just made, with no cap yet: their first limit() needs no
   * reading of devices or qdiscs (two commands off a new sliver's way up). */
  readonly #fresh = new Map<string, Link>();

  constructor(opts: NetworkDriverOptions) {
    parseIpv4(opts.publicAddress);
    this.#opts = opts;
    this.#subnet = parseSubnet(opts.sliverSubnet);
    this.#config = { table: opts.tableName ?? 'planetlite', publicAddress: opts.publicAddress, subnet: this.#subnet };
    validateSpecs(this.#config, []);
    this.capabilities = { nat: true, isolation: true, tap: existsSync('/dev/net/tun'), rateLimit: true };
  }

  address(spec: Pick<SliverNetSpec, 'slot'>): { hostAddress: string; sliverAddress: string; prefix: number } {
    return slotAddress(this.#subnet, spec.slot);
  }

  async check(): Promise<void> {
    const ns = this.#opts.netns;
    if (ns && !(await tryRun('nsenter', [`--net=/run/netns/${ns}`, 'true']))) {
      throw new NetworkError('missing_kernel_feature', `network namespace ${ns} does not exist or cannot be entered (ip netns list)`);
    }
    await requireTools(['nft', 'ip', 'tc', 'sysctl'], 'the nftables network driver', (m) => new NetworkError('missing_tool', m));
    // --check sends the whole transaction to the kernel and aborts it: proves nf_tables, nat, ct
    // and fib support without touching the live ruleset.
    try {
      await this.#run('nft', ['-c', '-f', '-'], { input: renderRuleset(this.#config, []) });
    } catch (err) {
      throw new NetworkError('missing_kernel_feature', `the kernel refused the nftables ruleset; it needs nf_tables with nat, conntrack and fib support (modprobe nf_tables nft_nat nft_fib_inet nft_ct): ${errText(err)}`, { cause: err });
    }
    const links = [...(await this.#links()).values()];
    const where = links.filter((l) => l.ipv4.some((a) => a.startsWith(`${this.#opts.publicAddress}/`))).map((l) => l.name);
    if (!where.length) {
      throw new NetworkError('public_address', `public address ${this.#opts.publicAddress} is not configured on any interface of this node; DNAT matches packets addressed to it`);
    }
    // The table treats every plh* device as a sliver's link (and drops what an unknown one sends):
    // a public interface by such a name would have its own traffic dropped.
    const clash = where.find((n) => [HOST_PREFIX, PEER_PREFIX, IFB_PREFIX].some((p) => n.startsWith(p)));
    if (clash) {
      throw new NetworkError('public_address', `public address ${this.#opts.publicAddress} is on ${clash}, a name PlanetLite keeps for slivers' links (${HOST_PREFIX}*, ${PEER_PREFIX}*, ${IFB_PREFIX}*): rename the interface`);
    }
    const pubIf = this.#opts.publicInterface;
    if (pubIf && !where.includes(pubIf)) {
      throw new NetworkError('public_address', `public address ${this.#opts.publicAddress} is on ${where.join(', ')}, not on the configured public interface ${pubIf}`);
    }
  }

  async apply(slivers: SliverNetSpec[], opts: { whole?: boolean } = {}): Promise<void> {
    const list = slivers.map((s) => ({ ...s, ports: { ...s.ports } }));
    const before = opts.whole ? null : this.#applied;
    // Both render functions validate the list before anything changes.
    const changes = before ? renderChanges(this.#config, before, list) : null;
    const whole = changes === null ? renderRuleset(this.#config, list) : null;
    if (!this.#forwarding) {
      await this.#sysctl('net.ipv4.ip_forward', '1');
      this.#forwarding = true;
    }
    this.#applied = null;
    if (changes !== null) {
      // An entry that is not where the last apply left it (the table changed by someone else)
      // fails the batch, which then changed nothing: the whole table is written instead.
      if (changes === '' || (await this.#tryRun('nft', ['-f', '-'], { input: changes }))) {
        this.#applied = list;
        return;
      }
    }
    await this.#run('nft', ['-f', '-'], { input: whole ?? renderRuleset(this.#config, list) });
    this.#applied = list;
  }

  async attach(spec: SliverNetSpec): Promise<SliverNet> {
    validateSpecs(this.#config, [spec]);
    const id = sliverId(spec.id);
    const { hostIf, peerIf } = deviceNames(id);
    const addr = this.address(spec);
    const alias = ALIAS_PREFIX + id;
    const cidr = `${addr.hostAddress}/${addr.prefix}`;
    const want = spec.kind === 'veth' ? 'veth' : 'tun';
    const links = await readLinksOf(this.#exec, [hostIf, peerIf, ifbName(id)]);
    let host = links.get(hostIf);
    const peer = links.get(peerIf);
    if (host) this.#assertOurs(host, id);
    if (peer) this.#assertOurs(peer, id);
    // Names and aliases carry no spaces or quotes (uuid, hex), so batch lines need no quoting.
    const cmds: string[] = [];
    const hadVeth = host?.kind === 'veth';
    if (host && host.kind !== want) {
      cmds.push(`link del dev ${hostIf}`); // the sliver changed kind (veth ↔ tap): start over
      host = undefined;
    }
    // A peer without its host end would block the name (a deleted veth end took its peer along).
    if (!host && peer && !hadVeth) cmds.push(`link del dev ${peerIf}`);
    if (!host) {
      if (spec.kind === 'veth') {
        cmds.push(`link add ${hostIf} type veth peer name ${peerIf}`, `link set dev ${peerIf} alias ${alias}`);
      } else {
        cmds.push(`tuntap add dev ${hostIf} mode tap`);
      }
      cmds.push(`link set dev ${hostIf} alias ${alias}`, `addr add ${cidr} dev ${hostIf}`);
    } else {
      if (host.alias !== alias) cmds.push(`link set dev ${hostIf} alias ${alias}`);
      if (spec.kind === 'veth' && peer && peer.alias !== alias) cmds.push(`link set dev ${peerIf} alias ${alias}`);
      if (host.ipv4.length !== 1 || host.ipv4[0] !== cidr) cmds.push(`addr flush dev ${hostIf}`, `addr add ${cidr} dev ${hostIf}`);
    }
    this.#fresh.delete(id);
    await Reverter.wrap(async (r) => {
      // Undo only what this call created: a half-made link is removed, an adopted one is left.
      if (!host) r.add(() => this.#tryRun('ip', ['link', 'del', 'dev', hostIf]));
      await ipBatch(this.#exec, cmds);
      if (!host?.up) {
        // A packet for the sliver that comes before the sliver's end is up (its table entries go in
        // beside the link) leaves an ARP entry whose first retry waits the interval the link had
        // then: 1 s by default. So the interval is set before the link goes up, with its sysctl,
        // not `ip ntable change`, which reads every link of the node first (12 ms on an empty
        // node, 43 ms beside 2,000 slivers' devices).
        await this.#sysctl(`net.ipv4.neigh.${hostIf}.retrans_time_ms`, String(ARP_RETRANS_MS));
        await ipBatch(this.#exec, [`link set dev ${hostIf} up`]);
      }
    });
    // A link made now has no caps and no ifb (one left by a crash would have been in `links`).
    if (!host && !links.has(ifbName(id))) this.#fresh.set(id, { name: hostIf, alias, kind: want, up: true, ipv4: [cidr] });
    return {
      id,
      hostIf,
      peerIf: spec.kind === 'veth' ? peerIf : null,
      hostAddress: addr.hostAddress,
      sliverAddress: addr.sliverAddress,
      prefix: addr.prefix,
      gateway: addr.hostAddress,
    };
  }

  async detach(id: string): Promise<void> {
    const canonical = sliverId(id);
    const { hostIf, peerIf } = deviceNames(canonical);
    const ifb = ifbName(canonical);
    this.#fresh.delete(canonical);
    const links = await readLinksOf(this.#exec, [hostIf, peerIf, ifb]);
    const host = links.get(hostIf);
    const peer = links.get(peerIf);
    // Never delete a device whose alias names another sliver (a hash clash attach refused).
    const ours = (l: Link | undefined): l is Link => !!l && (!l.alias?.startsWith(ALIAS_PREFIX) || l.alias === ALIAS_PREFIX + canonical);
    const cmds: string[] = [];
    if (ours(host)) cmds.push(`link del dev ${hostIf}`);
    // Deleting a veth end takes its peer along, wherever the peer is; only a lone peer needs its own delete.
    if (ours(peer) && !(ours(host) && host.kind === 'veth')) cmds.push(`link del dev ${peerIf}`);
    // The host end goes first: its ingress filter redirects to the ifb.
    if (ours(links.get(ifb))) cmds.push(`link del dev ${ifb}`);
    await ipBatch(this.#exec, cmds);
  }

  async limit(id: string, rate: SliverRate): Promise<void> {
    validateRate(rate);
    const canonical = sliverId(id);
    const { hostIf } = deviceNames(canonical);
    const ifb = ifbName(canonical);
    const fresh = this.#fresh.get(canonical);
    this.#fresh.delete(canonical);
    const names = { hostIf, ifb, alias: ALIAS_PREFIX + canonical };
    if (fresh) {
      try {
        return await applyLimit(this.#exec, names, rate, new Map([[hostIf, fresh]]), new Map());
      } catch {
        // Something changed since attach() (a device by the ifb's name): read the host as it is.
      }
    }
    const links = await readLinksOf(this.#exec, [hostIf, ifb]);
    for (const name of [hostIf, ifb]) {
      const link = links.get(name);
      if (link) this.#assertOurs(link, canonical);
    }
    await applyLimit(this.#exec, names, rate, links);
  }

  async rateDrift(rates: ReadonlyMap<string, SliverRate>): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (!rates.size) return out;
    const [links, qdiscs] = await Promise.all([this.#links(), this.#run('tc', ['-j', 'qdisc', 'show']).then((r) => parseQdiscs(r.stdout))]);
    const none: DeviceQdiscs = { htbRoot: false, ingress: false };
    for (const [id, rate] of rates) {
      const canonical = sliverId(id);
      const { hostIf } = deviceNames(canonical);
      const ifb = ifbName(canonical);
      const host = links.get(hostIf);
      const ifbLink = links.get(ifb);
      const why = shapingDrift({ hostIf, ifb, alias: ALIAS_PREFIX + canonical }, {
        host: host ? (qdiscs.get(hostIf) ?? none) : null,
        ifb: ifbLink ? { ...(qdiscs.get(ifb) ?? none), alias: ifbLink.alias, up: ifbLink.up } : null,
      }, rate);
      if (why) out.set(id, why);
    }
    return out;
  }

  async tableState(): Promise<string> {
    // Terse: the rules and the maps' declarations, not their entries (nft still reads them: 150 ms
    // beside 2,000 slivers' windows of 10 ports; only a whole pass and a whole apply list it). An
    // entry changed by hand is not seen here (a change that needs it is: its batch fails and the
    // whole table is written).
    return (await this.#tryRun('nft', ['-t', 'list', 'table', 'inet', this.#config.table]))?.stdout ?? '';
  }

  counters(): Promise<Map<string, SliverCounters>> {
    return readCounters(this.#exec);
  }

  async listAttached(): Promise<string[]> {
    // An ifb counts too: a crash can leave one without its link, and detach() is what removes it.
    const ids = [...(await this.#links()).values()]
      .filter((l) => (l.name.startsWith(HOST_PREFIX) || l.name.startsWith(IFB_PREFIX)) && DEVICE_PATTERN.test(l.name) && l.alias?.startsWith(ALIAS_PREFIX))
      .map((l) => l.alias!.slice(ALIAS_PREFIX.length));
    return [...new Set(ids)].sort();
  }

  async teardown(): Promise<void> {
    this.#applied = null;
    this.#fresh.clear();
    await this.#run('nft', ['-f', '-'], { input: renderDeleteTable(this.#config.table) });
    // Every device named like ours; host ends first, each takes its veth peer along; ifbs last
    // (a host end's ingress filter redirects to its ifb).
    const links = [...(await this.#links()).values()].filter((l) => DEVICE_PATTERN.test(l.name));
    const hosts = links.filter((l) => l.name.startsWith(HOST_PREFIX));
    const peered = new Set(hosts.filter((l) => l.kind === 'veth').map((l) => PEER_PREFIX + l.name.slice(HOST_PREFIX.length)));
    const lonePeers = links.filter((l) => l.name.startsWith(PEER_PREFIX) && !peered.has(l.name));
    const ifbs = links.filter((l) => l.name.startsWith(IFB_PREFIX));
    await ipBatch(this.#exec, [...hosts, ...lonePeers, ...ifbs].map((l) => `link del dev ${l.name}`));
  }

  #assertOurs(link: Link, id: string): void {
    // No alias: our own half-made device (a crash between `ip link add` and `alias`); the name is
    // this id's hash, so adopt it.
    if (link.alias && link.alias !== ALIAS_PREFIX + id) {
      throw new NetworkError('device_conflict', `device name ${link.name} for sliver ${id} is taken by ${JSON.stringify(link.alias)} (hash clash or foreign device); not touching it`);
    }
  }

  /** Every link, read once for the callers that ask at the same time (a pass asks twice: for
   * the attached slivers and for their rate caps). */
  #links(): Promise<Map<string, Link>> {
    this.#linksRead ??= readLinks(this.#exec).finally(() => {
      this.#linksRead = null;
    });
    return this.#linksRead;
  }

  /** Sets a sysctl of the node's network namespace: written in /proc/sys from here (no process)
   * when that is ours, through `sysctl` in the namespace otherwise (/proc/sys/net is the writer's). */
  async #sysctl(key: string, value: string): Promise<void> {
    if (this.#opts.netns) await this.#run('sysctl', ['-q', '-w', `${key}=${value}`]);
    else await writeFile(`/proc/sys/${key.replaceAll('.', '/')}`, value);
  }

  readonly #exec = (command: string, args: readonly string[], opts?: RunOptions) => this.#run(command, args, opts);

  #argv(command: string, args: readonly string[]): [string, string[]] {
    const ns = this.#opts.netns;
    if (!ns) return [command, [...args]];
    // `ip -n`/`tc -n` switch namespace themselves (with a private /sys, as `ip netns exec` does);
    // other tools go through nsenter, which enters only the network namespace and execs them.
    return command === 'ip' || command === 'tc' ? [command, ['-n', ns, ...args]] : ['nsenter', [`--net=/run/netns/${ns}`, '--', command, ...args]];
  }

  #run(command: string, args: readonly string[], opts?: RunOptions) {
    const [c, a] = this.#argv(command, args);
    return run(c, a, opts);
  }

  #tryRun(command: string, args: readonly string[], opts?: RunOptions) {
    const [c, a] = this.#argv(command, args);
    return tryRun(c, a, opts);
  }
}

function errText(err: unknown): string {
  return err instanceof CommandError ? err.message : String(err);
}
