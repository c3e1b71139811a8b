// The pure rule renderer: the text nft gets, and the inputs it refuses before touching the host.
import { describe, expect, it } from 'vitest';
import type { SliverNetSpec } from './driver.js';
import { parseSubnet } from './ipv4.js';
import { deviceNames } from './nftables/names.js';
import { renderDeleteTable, renderRuleset, type RulesetConfig } from './nftables/ruleset.js';

const config: RulesetConfig = { table: 'planetlite', publicAddress: '198.18.0.1', subnet: parseSubnet('10.200.0.0/16') };
const a: SliverNetSpec = { id: '11111111-1111-4111-8111-111111111111', slot: 0, ports: { first: 20000, last: 20009 }, kind: 'veth' };
const b: SliverNetSpec = { id: '22222222-2222-4222-8222-222222222222', slot: 1, ports: { first: 20010, last: 20010 }, kind: 'tap' };

describe('renderRuleset', () => {
  it('replaces the whole table in one transaction', () => {
    const text = renderRuleset(config, []);
    expect(text.startsWith('table inet planetlite\ndelete table inet planetlite\ntable inet planetlite {\n')).toBe(true);
    expect(text).not.toMatch(/elements/); // empty maps are declared without elements
    expect(renderDeleteTable('planetlite')).toBe('table inet planetlite\ndelete table inet planetlite\n');
  });

  it('renders one DNAT chain and one filter chain per sliver, dispatched by port window and device', () => {
    const text = renderRuleset(config, [a, b]);
    const ha = deviceNames(a.id).hostIf;
    const hb = deviceNames(b.id).hostIf;
    expect(text).toContain('20000-20009 : jump sliver_11111111-1111-4111-8111-111111111111_dnat');
    expect(text).toContain('20010 : jump sliver_22222222-2222-4222-8222-222222222222_dnat');
    expect(text).toContain(`"${ha}" : goto sliver_11111111-1111-4111-8111-111111111111`);
    expect(text).toContain(`"${hb}" : goto sliver_22222222-2222-4222-8222-222222222222`);
    // lowest port → :22, the rest keep their number
    expect(text).toContain('meta l4proto { tcp, udp } th dport 20000 dnat ip to 10.200.0.2:22');
    expect(text).toContain('meta l4proto { tcp, udp } th dport 20001-20009 dnat ip to 10.200.0.2\n');
    // a one-port window has only the ssh rule
    expect(text).toContain('th dport 20010 dnat ip to 10.200.0.6:22');
    expect(text).not.toMatch(/th dport 20011/);
    // anti-spoofing per sliver, isolation and NAT in the base chains
    expect(text).toContain('ip saddr != 10.200.0.2 drop');
    expect(text).toContain('ip saddr != 10.200.0.6 drop');
    expect(text).toContain('ip daddr 198.18.0.1 meta l4proto { tcp, udp } th dport vmap @sliver_ports');
    expect(text).toContain('ip saddr 10.200.0.0/16 oifname != "plh*" masquerade');
    expect(text).toContain('ct status dnat ct original ip daddr 198.18.0.1 accept');
  });

  it('renders the same text whatever the order of the list', () => {
    expect(renderRuleset(config, [b, a])).toBe(renderRuleset(config, [a, b]));
  });

  it('refuses bad input before anything reaches nft', () => {
    const bad = (s: Partial<SliverNetSpec>[]): (() => string) => () => renderRuleset(config, s.map((x) => ({ ...a, ...x })));
    expect(bad([{}, {}])).toThrow(/listed twice/);
    expect(bad([{}, { id: b.id }])).toThrow(/share slot 0/);
    expect(bad([{}, { id: b.id, slot: 1, ports: { first: 20009, last: 20019 } }])).toThrow(/port windows overlap/);
    expect(bad([{ ports: { first: 20010, last: 20000 } }])).toThrow(/bad port window/);
    expect(bad([{ ports: { first: 0, last: 10 } }])).toThrow(/bad port window/);
    expect(bad([{ ports: { first: 65535, last: 65536 } }])).toThrow(/bad port window/);
    expect(bad([{ slot: 16384 }])).toThrow(/outside/);
    expect(bad([{ id: 'x" ; flush ruleset' }])).toThrow(/uuid/);
    expect(bad([{ kind: 'macvlan' as 'veth' }])).toThrow(/unknown link kind/);
    expect(() => renderRuleset({ ...config, table: 'x; flush ruleset' }, [])).toThrow(/table name/);
    expect(() => renderRuleset({ ...config, publicAddress: '10.200.3.4' }, [])).toThrow(/inside the sliver subnet/);
  });
});
