// Agent settings: defaults, settings.json and flags merged, checked against the schema, and a bad
// one refused with its name.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultSettings, loadSettings, settingsProblem } from '../src/settings.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'pl-settings-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('agent settings', () => {
  it('merges defaults, settings.json and flags, and remembers the result', () => {
    writeFileSync(join(dir, 'settings.json'), JSON.stringify({ pool_size: '4G', watchdog: { warn_percent: 70 } }));
    const s = loadSettings(dir, { sliver_subnet: '10.9.0.0/24', vm: undefined, watchdog: { cooldown_seconds: 5 } });
    expect(s).toEqual({ ...defaultSettings(dir), pool_size: '4G', sliver_subnet: '10.9.0.0/24', watchdog: { ...defaultSettings(dir).watchdog, warn_percent: 70, cooldown_seconds: 5 } });
    expect(JSON.parse(readFileSync(join(dir, 'settings.json'), 'utf8'))).toEqual(s);
    expect(loadSettings(dir)).toEqual(s);
  });

  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['vm', { vm: 'maybe' }, /^setting vm must be 'auto' or 'off', not "maybe"/],
    ['image_gc_grace_seconds', { image_gc_grace_seconds: 1.5 }, /^setting image_gc_grace_seconds must be a whole number of seconds, not 1\.5/],
    ['image_upload_kbps', { image_upload_kbps: 'fast' }, /^setting image_upload_kbps must be whole kbit\/s \(at least 8\), or null for no cap, not "fast"/],
    ['pool_size', { pool_size: '20 gigs' }, /^setting pool_size must be a size as truncate takes it/],
    ['lxc_path', { lxc_path: 'lxc' }, /^setting lxc_path must be an absolute path/],
    ['netns', { netns: 'a b' }, /^setting netns must be a network namespace name, or null, not "a b"/],
    ['sliver_subnet', { sliver_subnet: '10.200.0.0/31' }, /^setting sliver_subnet: sliver subnet must be IPv4 CIDR/],
    ['a watchdog field', { watchdog: { reset_percent: 150 } }, /^setting watchdog\.reset_percent must be a percentage from 1 to 100, not 150/],
    ['the watchdog levels together', { watchdog: { warn_percent: 95, reset_percent: 90 } }, /^watchdog setting warn_percent \(95\) must not be above reset_percent \(90\)/],
    ['an unknown setting (a typo)', { pool_sise: '4G' }, /^unknown setting pool_sise/],
    ['an unknown watchdog setting', { watchdog: { enable: false } }, /^unknown setting watchdog\.enable/],
  ];
  for (const [what, saved, message] of bad) {
    it(`refuses a bad ${what}, naming it and where it came from`, () => {
      writeFileSync(join(dir, 'settings.json'), JSON.stringify(saved));
      expect(() => loadSettings(dir)).toThrow(message);
      expect(() => loadSettings(dir)).toThrow(`(in ${join(dir, 'settings.json')} or the run flags)`);
      // Nothing is written back.
      expect(JSON.parse(readFileSync(join(dir, 'settings.json'), 'utf8'))).toEqual(saved);
    });
  }

  it('refuses a bad flag the same way, and a settings.json that is not JSON', () => {
    expect(() => loadSettings(dir, { image_gc_grace_seconds: -1 })).toThrow(/^setting image_gc_grace_seconds must be a whole number of seconds, not -1/);
    writeFileSync(join(dir, 'settings.json'), '{ pool: ');
    expect(() => loadSettings(dir)).toThrow(/settings\.json is not JSON .*: fix or delete it/);
    expect(settingsProblem(defaultSettings(dir))).toBeNull();
  });
});
