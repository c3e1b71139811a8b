// The systemd units in infra/systemd, checked by systemd-analyze (no systemd runs here): they
// verify with no complaint once their programs exist, keep the agent's slivers out of its stop
// and restart, and run the registry as its own user with an exposure systemd rates OK.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const UNITS = fileURLToPath(new URL('../../infra/systemd/', import.meta.url));
let dir: string;

/** The unit with /opt/planetlite moved into the temp dir, where stub programs exist. */
function render(name: string, edit = (t: string) => t): string {
  const file = join(dir, name);
  writeFileSync(file, edit(readFileSync(join(UNITS, name), 'utf8').replaceAll('/opt/planetlite', join(dir, 'opt/planetlite'))));
  return file;
}
const analyze = (...args: string[]) => spawnSync('systemd-analyze', args, { encoding: 'utf8', cwd: dir });
const directives = (name: string) => readFileSync(join(UNITS, name), 'utf8').split('\n').filter((l) => /^[A-Z]\w+=/.test(l));

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pl-units-'));
  mkdirSync(join(dir, 'opt/planetlite/current/bin'), { recursive: true });
  for (const p of ['planetlite-agent', 'planetlite-registry']) {
    writeFileSync(join(dir, 'opt/planetlite/current/bin', p), '#!/bin/sh\n');
    chmodSync(join(dir, 'opt/planetlite/current/bin', p), 0o755);
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('systemd units', () => {
  it('verify with no warning', () => {
    const r = analyze('verify', render('planetlite-agent.service'), render('planetlite-registry.service'));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('a broken unit does not (the check can fail)', () => {
    const r = analyze('verify', render('planetlite-agent.service', (t) => t.replace(/^KillMode=process$/m, 'KillMode=processes')));
    expect(r.stderr).toMatch(/Failed to parse kill mode/);
    const missing = analyze('verify', render('planetlite-registry.service', (t) => t.replace('bin/planetlite-registry', 'bin/absent')));
    expect(missing.status).not.toBe(0);
  });

  it('the agent: after the network, restarted on failure, and its stop leaves the slivers', () => {
    const d = directives('planetlite-agent.service');
    expect(d).toEqual(expect.arrayContaining(['Wants=network-online.target', 'After=network-online.target', 'Restart=on-failure', 'KillMode=process', 'Delegate=yes', 'WantedBy=multi-user.target']));
    expect(d.some((l) => l.startsWith('User='))).toBe(false); // root: LXC, btrfs, nftables
  });

  it('the registry: its own user and state dir, hardened (exposure OK)', () => {
    const d = directives('planetlite-registry.service');
    expect(d).toEqual(expect.arrayContaining(['User=planetlite', 'Group=planetlite', 'StateDirectory=planetlite-registry', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'Restart=on-failure', 'After=network-online.target postgresql.service redis-server.service', 'LimitNOFILE=524288']));
    const r = analyze('security', '--offline=yes', render('planetlite-registry.service'));
    const exposure = Number(/Overall exposure level for .*: ([\d.]+)/.exec(r.stdout)?.[1]);
    console.log(`registry unit: systemd-analyze security exposure ${exposure}`);
    expect(exposure).toBeLessThanOrEqual(2.0);
  });
});
