// Slot → address math and the deterministic names (pure, no host access).
import { describe, expect, it } from 'vitest';
import { parseSubnet, slotAddress, slotCount } from './ipv4.js';
import { deviceNames, sliverId } from './nftables/names.js';

describe('slot addresses', () => {
  const subnet = parseSubnet('10.200.0.0/16');
  it('gives slot 0 the .1 (host) and .2 (sliver) of the first /30, and steps by 4', () => {
    expect(slotAddress(subnet, 0)).toEqual({ hostAddress: '10.200.0.1', sliverAddress: '10.200.0.2', prefix: 30 });
    expect(slotAddress(subnet, 1)).toEqual({ hostAddress: '10.200.0.5', sliverAddress: '10.200.0.6', prefix: 30 });
    expect(slotAddress(subnet, 64)).toEqual({ hostAddress: '10.200.1.1', sliverAddress: '10.200.1.2', prefix: 30 });
    expect(slotAddress(subnet, 16383)).toEqual({ hostAddress: '10.200.255.253', sliverAddress: '10.200.255.254', prefix: 30 });
  });
  it('rejects slots beyond the subnet, negative or fractional slots', () => {
    expect(slotCount(subnet)).toBe(16384);
    expect(() => slotAddress(subnet, 16384)).toThrow(/outside 10\.200\.0\.0\/16 \(valid slots: 0\.\.16383\)/);
    expect(() => slotAddress(subnet, -1)).toThrow(/outside/);
    expect(() => slotAddress(subnet, 1.5)).toThrow(/outside/);
    const tiny = parseSubnet('192.168.7.8/30');
    expect(slotAddress(tiny, 0)).toEqual({ hostAddress: '192.168.7.9', sliverAddress: '192.168.7.10', prefix: 30 });
    expect(() => slotAddress(tiny, 1)).toThrow(/valid slots: 0\.\.0/);
  });
  it('works at the top of the address space (no signed 32-bit overflow)', () => {
    expect(slotAddress(parseSubnet('255.255.255.0/24'), 63).sliverAddress).toBe('255.255.255.254');
  });
  it('refuses subnets that are not IPv4 CIDR, too small, or have host bits set', () => {
    expect(() => parseSubnet('10.200.0.0')).toThrow(/CIDR/);
    expect(() => parseSubnet('10.200.0.0/31')).toThrow(/at most \/30/);
    expect(() => parseSubnet('fd00::/64')).toThrow();
    expect(() => parseSubnet('10.300.0.0/16')).toThrow(/not an IPv4 address/);
    expect(() => parseSubnet('10.200.0.1/16')).toThrow(/did you mean 10\.200\.0\.0\/16/);
  });
});

describe('names', () => {
  const id = '3FA85F64-5717-4562-B3FC-2C963F66AFA6';
  it('validates and lower-cases sliver ids', () => {
    expect(sliverId(id)).toBe('3fa85f64-5717-4562-b3fc-2c963f66afa6');
    expect(() => sliverId('../etc')).toThrow(/uuid/);
    expect(() => sliverId('3fa85f64-5717-4562-b3fc-2c963f66afa6; drop')).toThrow(/uuid/);
  });
  it('derives device names that fit IFNAMSIZ and do not depend on the id case', () => {
    const n = deviceNames(id);
    expect(n).toEqual(deviceNames(id.toLowerCase()));
    expect(n.hostIf).toMatch(/^plh[0-9a-f]{12}$/);
    expect(n.peerIf).toBe(`pls${n.hostIf.slice(3)}`);
    expect(n.hostIf.length).toBeLessThanOrEqual(15);
  });
  it('hashes, so uuids that share leading digits (v7, made in the same ms) still differ', () => {
    const a = deviceNames('01890a5d-ac96-774b-bcce-b302099a8057').hostIf;
    const b = deviceNames('01890a5d-ac96-774b-8000-000000000001').hostIf;
    expect(a).not.toBe(b);
  });
});
