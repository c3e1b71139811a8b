// The pure rule renderer: the text nft gets, and the inputs it refuses before touching the host.
import { describe, expect, it } from 'vitest';
import type { SliverNetSpec } from './driver.js';
import { parseSubnet } from './ipv4.js';
import { deviceNames } from './nftables/names.js';
import { renderChanges, renderDeleteTable, renderRuleset, type RulesetConfig } from './nftables/ruleset.js';

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

  it('renders each sliver as map entries: its port window and its device with its address', () => {
    const text = renderRuleset(config, [a, b]);
    const ha = deviceNames(a.id).hostIf;
    const hb = deviceNames(b.id).hostIf;
    // lowest port → :22, the rest keep their number; a one-port window has only the ssh entry
    expect(text).toContain('20000 : 10.200.0.2 . 22');
    expect(text).toContain('20001 : 10.200.0.2,\n\t\t\t20002 : 10.200.0.2,');
    expect(text).toContain('20009 : 10.200.0.2');
    expect(text).not.toContain('20010 : 10.200.0.2');
    expect(text).not.toContain('interval');
    expect(text).toContain('20010 : 10.200.0.6 . 22');
    expect(text).not.toMatch(/20011/);
    // anti-spoofing: each device with the one address it may send from
    expect(text).toContain(`"${ha}" . 10.200.0.2`);
    expect(text).toContain(`"${hb}" . 10.200.0.6`);
    // the rules are the same whatever the slivers: none names one
    expect(text).not.toContain(a.id);
    const rules = (t: string) => t.split('\n').filter((l) => !/^\t\t\t|elements = \{|^\t\t\}$/.test(l)).join('\n');
    expect(rules(text)).toBe(rules(renderRuleset(config, [])));
    expect(text).toContain('ip daddr 198.18.0.1 meta l4proto { tcp, udp } dnat ip to th dport map @sliver_ssh');
    expect(text).toContain('iifname . ip saddr != @sliver_sources drop');
    expect(text).toContain('ip saddr 10.200.0.0/16 oifname != "plh*" masquerade');
    expect(text).toContain('ct status dnat ct original ip daddr 198.18.0.1 accept');
  });

  it('renders the changes from one list to the next as entries deleted and added', () => {
    const ha = deviceNames(a.id).hostIf;
    const hb = deviceNames(b.id).hostIf;
    expect(renderChanges(config, [a, b], [b, a])).toBe('');
    expect(renderChanges(config, [a], [a, b])).toBe(
      'add element inet planetlite sliver_ssh { 20010 : 10.200.0.6 . 22 }\n' + `add element inet planetlite sliver_sources { "${hb}" . 10.200.0.6 }\n`,
    );
    expect(renderChanges(config, [a, b], [b])).toBe(
      'delete element inet planetlite sliver_ssh { 20000 }\ndelete element inet planetlite sliver_ports { 20001, 20002, 20003, 20004, 20005, 20006, 20007, 20008, 20009 }\n' +
        `delete element inet planetlite sliver_sources { "${ha}" . 10.200.0.2 }\n`,
    );
    // A changed window: the old entries go and the new ones come, in one batch.
    const moved = renderChanges(config, [a], [{ ...a, ports: { first: 30000, last: 30001 } }]).split('\n');
    expect(moved.slice(0, 3).every((l) => l.startsWith('delete element'))).toBe(true);
    expect(moved).toContain('add element inet planetlite sliver_ports { 30001 : 10.200.0.2 }');
    // The next list is checked as a whole before anything is rendered.
    expect(() => renderChanges(config, [a], [a, { ...b, ports: { first: 20005, last: 20010 } }])).toThrow(/port windows overlap/);
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
