// Renders the driver's whole nftables table from the list of slivers: pure text, no host access,
// so it can be unit-tested and is applied in one `nft -f -` transaction.
import type { SliverNetSpec } from '../driver.js';
import { NetworkError } from '../errors.js';
import { formatIpv4, parseIpv4, slotAddress, subnetContains, type Ipv4Subnet } from '../ipv4.js';
import { chainNames, deviceNames, HOST_PREFIX, sliverId } from './names.js';

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

function range(first: number, last: number): string {
  return first === last ? String(first) : `${first}-${last}`;
}

/**
 * The full transaction: create-if-missing, delete, define. nft applies the three as one batch, so
 * packets see either the old table or the new one, and a bad ruleset leaves the old one in place.
 * Slivers are sorted by slot so the same set renders the same text whatever the input order.
 */
export function renderRuleset(config: RulesetConfig, slivers: readonly SliverNetSpec[]): string {
  validateSpecs(config, slivers);
  const t = config.table;
  const pub = formatIpv4(parseIpv4(config.publicAddress));
  const devices = `"${HOST_PREFIX}*"`;
  const sorted = [...slivers].sort((a, b) => a.slot - b.slot);

  const portElements: string[] = [];
  const deviceElements: string[] = [];
  const sliverChains: string[] = [];
  for (const s of sorted) {
    const { hostIf } = deviceNames(s.id);
    const chain = chainNames(s.id);
    const { sliverAddress } = slotAddress(config.subnet, s.slot);
    const { first, last } = s.ports;
    portElements.push(`${range(first, last)} : jump ${chain.dnat}`);
    deviceElements.push(`"${hostIf}" : goto ${chain.filter}`);
    const dnat = [`meta l4proto { tcp, udp } th dport ${first} dnat ip to ${sliverAddress}:${SSH_PORT}`];
    if (last > first) dnat.push(`meta l4proto { tcp, udp } th dport ${range(first + 1, last)} dnat ip to ${sliverAddress}`);
    sliverChains.push(
      chainBlock(chain.dnat, [`# sliver ${sliverId(s.id)}: port window ${first}-${last}, lowest port to sshd`, ...dnat]),
      chainBlock(chain.filter, [
        `# forwarded packets from ${hostIf} (sliver ${sliverId(s.id)})`,
        `ip saddr != ${sliverAddress} drop`,
        'ct state established,related accept',
        `oifname ${devices} ct status dnat ct original ip daddr ${pub} accept`,
        `oifname ${devices} drop`,
        'accept',
      ]),
    );
  }

  const map = (name: string, type: string, flags: string | null, elements: string[]): string =>
    [
      `\tmap ${name} {`,
      `\t\ttype ${type}`,
      ...(flags ? [`\t\tflags ${flags}`] : []),
      ...(elements.length ? [`\t\telements = {\n${elements.map((e) => `\t\t\t${e}`).join(',\n')}\n\t\t}`] : []),
      '\t}',
    ].join('\n');

  const body = [
    map('sliver_ports', 'inet_service : verdict', 'interval', portElements),
    map('sliver_devices', 'ifname : verdict', null, deviceElements),
    chainBlock('prerouting', [
      'type nat hook prerouting priority dstnat; policy accept;',
      `ip daddr ${pub} meta l4proto { tcp, udp } th dport vmap @sliver_ports`,
    ]),
    chainBlock('output', [
      '# the node itself (e.g. the agent probing sshd) reaches slivers through the same ports',
      'type nat hook output priority -100; policy accept;',
      `ip daddr ${pub} meta l4proto { tcp, udp } th dport vmap @sliver_ports`,
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
      '# IPv4 only; a sliver device missing from the map (not applied yet, or leaked) gets nothing',
      'meta nfproto != ipv4 drop',
      'ct state invalid drop',
      'iifname vmap @sliver_devices',
      'drop',
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
    ...sliverChains,
  ].join('\n\n');

  return `table inet ${t}\ndelete table inet ${t}\ntable inet ${t} {\n${body}\n}\n`;
}

/** The transaction that removes the table whether or not it exists. */
export function renderDeleteTable(table: string): string {
  return `table inet ${table}\ndelete table inet ${table}\n`;
}

function chainBlock(name: string, lines: string[]): string {
  return [`\tchain ${name} {`, ...lines.map((l) => `\t\t${l}`), '\t}'].join('\n');
}
