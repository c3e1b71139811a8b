// IPv4 address arithmetic for the sliver subnet: one /30 per slot (host end .1, sliver .2).
import { NetworkError } from './errors.js';

export interface Ipv4Subnet {
  /** Network address as an unsigned 32-bit number. */
  base: number;
  prefix: number;
  /** The subnet as written back: `10.200.0.0/16`. */
  cidr: string;
}

export interface SlotAddress {
  hostAddress: string;
  sliverAddress: string;
  prefix: number;
}

/** Each slot is a /30: network, host end (the sliver's gateway), sliver end, broadcast. */
export const SLOT_PREFIX = 30;
const SLOT_SIZE = 2 ** (32 - SLOT_PREFIX);

export function parseIpv4(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) {
    throw new NetworkError('invalid_spec', `not an IPv4 address: ${JSON.stringify(text)}`);
  }
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses `a.b.c.d/n`; the address must be the network address and the subnet must hold at least one /30. */
export function parseSubnet(cidr: string): Ipv4Subnet {
  const m = /^([^/]+)\/([0-9]{1,2})$/.exec(cidr);
  const prefix = m ? Number(m[2]) : NaN;
  if (!m || !(prefix >= 0 && prefix <= SLOT_PREFIX)) {
    throw new NetworkError('invalid_spec', `sliver subnet must be IPv4 CIDR with a prefix of at most /${SLOT_PREFIX}: ${JSON.stringify(cidr)}`);
  }
  const base = parseIpv4(m[1]!);
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) {
    throw new NetworkError('invalid_spec', `sliver subnet ${cidr} has host bits set (did you mean ${formatIpv4(base - (base % size))}/${prefix}?)`);
  }
  return { base, prefix, cidr: `${formatIpv4(base)}/${prefix}` };
}

export function slotCount(subnet: Ipv4Subnet): number {
  return 2 ** (32 - subnet.prefix) / SLOT_SIZE;
}

/** Slot n is the n-th /30 of the subnet: slot 0 of 10.200.0.0/16 is 10.200.0.1 (host) / 10.200.0.2 (sliver). */
export function slotAddress(subnet: Ipv4Subnet, slot: number): SlotAddress {
  if (!Number.isSafeInteger(slot) || slot < 0 || slot >= slotCount(subnet)) {
    throw new NetworkError('invalid_spec', `slot ${slot} is outside ${subnet.cidr} (valid slots: 0..${slotCount(subnet) - 1})`);
  }
  const net = subnet.base + slot * SLOT_SIZE;
  return { hostAddress: formatIpv4(net + 1), sliverAddress: formatIpv4(net + 2), prefix: SLOT_PREFIX };
}

export function subnetContains(subnet: Ipv4Subnet, address: number): boolean {
  return address >= subnet.base && address < subnet.base + 2 ** (32 - subnet.prefix);
}
