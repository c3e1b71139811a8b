// Renders the driver's nftables table from the list of slivers — whole, or as the changes from
// the last list applied: pure text, no host access, so it can be unit-tested; each is applied in
// one `nft -f -` transaction.
import type { SliverNetSpec } from '../driver.js';
import { NetworkError } from '../errors.js';
import { formatIpv4, parseIpv4, slotAddress, subnetContains, type Ipv4Subnet } from '../ipv4.js';
import { deviceNames, HOST_PREFIX, sliverId } from './names.js';

export interface RulesetConfig {
  table: string;
  publicAddress: string;
  subnet: Ipv4Subnet;
}

const SSH_PORT = 22;

/** Throws on anything nft would reject later or that would silently mis-route a sliver. */
export function validateSpecs(config: RulesetConfig, slivers: readonly SliverNetSpec[]): void {
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(config.table)) throw new NetworkError('invalid_spec', `bad nftables table name: ${JSON.stringify(config.table)}`);
  if (subnetContains(config.subnet, parseIpv4(config.publicAddress))) {
    throw new NetworkError('invalid_spec', `public address ${config.publicAddress} lies inside the sliver subnet ${config.subnet.cidr}`);
  }
  const ids = new Map<string, SliverNetSpec>();
  const slots = new Map<number, string>();
  for (const s of slivers) {
    const id = sliverId(s.id);
    if (ids.has(id)) throw new NetworkError('invalid_spec', `sliver ${id} is listed twice`);
    ids.set(id, s);
    slotAddress(config.subnet, s.slot);
    const other = slots.get(s.slot);
    if (other) throw new NetworkError('invalid_spec', `slivers ${other} and ${id} share slot ${s.slot}`);
    slots.set(s.slot, id);
    if (s.kind !== 'veth' && s.kind !== 'tap') throw new NetworkError('invalid_spec', `sliver ${id}: unknown link kind ${JSON.stringify(s.kind)}`);
    const { first, last } = s.ports;
    if (!Number.isInteger(first) || !Number.isInteger(last) || first < 1 || last > 65535 || first > last) {
      throw new NetworkError('invalid_spec', `sliver ${id}: bad port window ${first}-${last}`);
    }
  }
  const byFirst = [...ids.values()].sort((a, b) => a.ports.first - b.ports.first);
  for (let i = 1; i < byFirst.length; i++) {
    const prev = byFirst[i - 1]!;
    const cur = byFirst[i]!;
    if (cur.ports.first <= prev.ports.last) {
      throw new NetworkError('invalid_spec', `port windows overlap: sliver ${prev.id} ${prev.ports.first}-${prev.ports.last} and sliver ${cur.id} ${cur.ports.first}-${cur.ports.last}`);
    }
  }
}

/** A sliver's entries in the table's maps and set: what it adds, and what removing it deletes. */
interface Entries {
  /** sliver_ssh: the lowest port → the sliver's sshd. */
  ssh: { key: string; value: string };
  /** sliver_ports: each other port of the window → the same port number on the sliver (none for a
   * window of one port). One entry per port, not a range: nft reads every entry of a table's
   * interval maps before each command, so a range map made each sliver's change cost more on a
   * fuller node (25 ms empty, 44 ms beside 2,000 slivers); a plain map costs the same at any size.
   * The node's port window bounds the entries (every window lies inside it, none overlap). */
  ports: { keys: number[]; value: string } | null;
  /** sliver_sources: its host-side device with the one address it may send from. */
  source: string;
}

function entries(config: RulesetConfig, s: SliverNetSpec): Entries {
  const { hostIf } = deviceNames(s.id);
  const { sliverAddress } = slotAddress(config.subnet, s.slot);
  const { first, last } = s.ports;
  return {
    ssh: { key: String(first), value: `${sliverAddress} . ${SSH_PORT}` },
    ports: last > first ? { keys: Array.from({ length: last - first }, (_, i) => first + 1 + i), value: sliverAddress } : null,
    source: `"${hostIf}" . ${sliverAddress}`,
  };
}

/**
 * The full transaction: create-if-missing, delete, define. nft applies the three as one batch, so
 * packets see either the old table or the new one, and a bad ruleset leaves the old one in place.
 * A sliver is entries in two maps and a set (one per port of its window, and its source) and no
 * rule of its own: the rules are the same for 1 sliver or 2,000, so adding or removing one
 * (renderChanges) costs the same on any node.
 * Slivers are sorted by slot so the same set renders the same text whatever the input order.
 */
export function renderRuleset(config: RulesetConfig, slivers: readonly SliverNetSpec[]): string {
  validateSpecs(config, slivers);
  const t = config.table;
  const pub = formatIpv4(parseIpv4(config.publicAddress));
  const devices = `"${HOST_PREFIX}*"`;
  const all = [...slivers].sort((a, b) => a.slot - b.slot).map((s) => entries(config, s));

  const map = (kind: 'map' | 'set', name: string, type: string, flags: string | null, elements: string[]): string =>
    [
      `\t${kind} ${name} {`,
      `\t\ttype ${type}`,
      ...(flags ? [`\t\tflags ${flags}`] : []),
      ...(elements.length ? [`\t\telements = {\n${elements.map((e) => `\t\t\t${e}`).join(',\n')}\n\t\t}`] : []),
      '\t}',
    ].join('\n');
  const dnat = [
    `ip daddr ${pub} meta l4proto { tcp, udp } dnat ip to th dport map @sliver_ssh`,
    `ip daddr ${pub} meta l4proto { tcp, udp } dnat ip to th dport map @sliver_ports`,
  ];

  const body = [
    map('map', 'sliver_ssh', 'inet_service : ipv4_addr . inet_service', null, all.map((e) => `${e.ssh.key} : ${e.ssh.value}`)),
    map('map', 'sliver_ports', 'inet_service : ipv4_addr', null, all.flatMap((e) => (e.ports ? e.ports.keys.map((k) => `${k} : ${e.ports!.value}`) : []))),
    map('set', 'sliver_sources', 'ifname . ipv4_addr', null, all.map((e) => e.source)),
    chainBlock('prerouting', [
      '# a sliver\'s port window: the lowest port to its sshd, the rest to the same port on it',
      'type nat hook prerouting priority dstnat; policy accept;',
      ...dnat,
    ]),
    chainBlock('output', [
      '# the node itself (e.g. the agent probing sshd) reaches slivers through the same ports',
      'type nat hook output priority -100; policy accept;',
      ...dnat,
    ]),
    chainBlock('postrouting', [
      'type nat hook postrouting priority srcnat; policy accept;',
      `ip saddr ${config.subnet.cidr} oifname != ${devices} masquerade`,
    ]),
    chainBlock('forward', [
      'type filter hook forward priority filter; policy accept;',
      `iifname ${devices} jump from_sliver`,
      `oifname ${devices} jump to_sliver`,
    ]),
    chainBlock('from_sliver', [
      '# IPv4 only, from a known sliver device with its own address (a device missing from the',
      '# set, not applied yet or leaked, gets nothing); to another sliver only through a public port',
      'meta nfproto != ipv4 drop',
      'ct state invalid drop',
      'iifname . ip saddr != @sliver_sources drop',
      'ct state established,related accept',
      `oifname ${devices} ct status dnat ct original ip daddr ${pub} accept`,
      `oifname ${devices} drop`,
      'accept',
    ]),
    chainBlock('to_sliver', [
      '# into a sliver only through a public port (or as a reply)',
      'ct state established,related accept',
      `ct status dnat ct original ip daddr ${pub} accept`,
      'drop',
    ]),
    chainBlock('input', [
      'type filter hook input priority filter; policy accept;',
      `iifname ${devices} jump sliver_to_node`,
    ]),
    chainBlock('sliver_to_node', [
      '# no node service is reachable from a sliver: only replies, and ping to its own gateway',
      'ct state established,related accept',
      'icmp type echo-request fib daddr . iif type local accept',
      'drop',
    ]),
  ].join('\n\n');

  return `table inet ${t}\ndelete table inet ${t}\ntable inet ${t} {\n${body}\n}\n`;
}

/**
 * The transaction that takes the table from `before` (what the last apply left) to `after`: the
 * entries of slivers gone or changed are deleted, those of new or changed ones added, in one
 * batch (nft applies it whole or not at all). Empty when nothing changed. Validates `after` first.
 */
export function renderChanges(config: RulesetConfig, before: readonly SliverNetSpec[], after: readonly SliverNetSpec[]): string {
  validateSpecs(config, after);
  const key = (s: SliverNetSpec) => `${s.slot}/${s.ports.first}-${s.ports.last}/${s.kind}`;
  const was = new Map(before.map((s) => [sliverId(s.id), s]));
  const now = new Map(after.map((s) => [sliverId(s.id), s]));
  const gone = [...was].filter(([id, s]) => now.get(id) === undefined || key(now.get(id)!) !== key(s)).map(([, s]) => s);
  const added = [...now].filter(([id, s]) => was.get(id) === undefined || key(was.get(id)!) !== key(s)).map(([, s]) => s);
  const t = config.table;
  const lines: string[] = [];
  for (const e of gone.map((s) => entries(config, s))) {
    lines.push(`delete element inet ${t} sliver_ssh { ${e.ssh.key} }`);
    if (e.ports) lines.push(`delete element inet ${t} sliver_ports { ${e.ports.keys.join(', ')} }`);
    lines.push(`delete element inet ${t} sliver_sources { ${e.source} }`);
  }
  for (const e of added.map((s) => entries(config, s))) {
    lines.push(`add element inet ${t} sliver_ssh { ${e.ssh.key} : ${e.ssh.value} }`);
    if (e.ports) lines.push(`add element inet ${t} sliver_ports { ${e.ports.keys.map((k) => `${k} : ${e.ports!.value}`).join(', ')} }`);
    lines.push(`add element inet ${t} sliver_sources { ${e.source} }`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}

/** The transaction that removes the table whether or not it exists. */
export function renderDeleteTable(table: string): string {
  return `table inet ${table}\ndelete table inet ${table}\n`;
}

function chainBlock(name: string, lines: string[]): string {
  return [`\tchain ${name} {`, ...lines.map((l) => `\t\t${l}`), '\t}'].join('\n');
}
