// A node with Debian's uidmap: LXC then maps ids through newuidmap/newgidmap even for root, and
// those allow only root's ranges in /etc/subuid and /etc/subgid. The agent takes its slivers' ids
// from there: a real unprivileged sliver runs and answers ssh with host ids inside the range;
// the old layout (ids from 1000000) is refused by LXC; with no range for root the agent stops at
// start with one line. newuidmap comes from Debian's own uidmap package, unpacked into a temp
// dir and put on this test's PATH only: installed system-wide it would change how LXC starts
// every other sliver on this shared machine. /etc/subuid and /etc/subgid are restored after.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Sliver } from '@planetlite/api';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

const AGENT = fileURLToPath(new URL('../../apps/agent/bin/planetlite-agent.js', import.meta.url));
const FIRST = 3_000_000; // not the agent's own layout (1000000): ids must come from the range
const BLOCK = 65_536;
const SLOTS = 64; // a /24 sliver subnet
const FILES = ['/etc/subuid', '/etc/subgid'];

let node: OneNode;
let tmp: string;
let sliver: Sliver;
const saved = new Map<string, string | null>();
const pathBefore = process.env.PATH;

function writeRootRange(on: boolean): void {
  for (const f of FILES) {
    const kept = (saved.get(f) ?? '').split('\n').filter((l) => l && !/^(root|0):/.test(l));
    writeFileSync(f, [...kept, ...(on ? [`root:${FIRST}:${(SLOTS + 1) * BLOCK}`] : [])].join('\n') + '\n');
  }
}

beforeAll(async () => {
  for (const f of FILES) saved.set(f, existsSync(f) ? readFileSync(f, 'utf8') : null);
  tmp = mkdtempSync(join(tmpdir(), 'pl-subids-'));
  execFileSync('apt-get', ['download', '-q', 'uidmap'], { cwd: tmp, stdio: ['ignore', 'ignore', 'pipe'], timeout: 120_000 });
  const deb = readdirSync(tmp).find((f) => f.startsWith('uidmap_') && f.endsWith('.deb'))!;
  execFileSync('dpkg-deb', ['-x', join(tmp, deb), join(tmp, 'uidmap')]);
  process.env.PATH = `${join(tmp, 'uidmap/usr/bin')}:${pathBefore}`;
  expect(execFileSync('sh', ['-c', 'command -v newuidmap'], { encoding: 'utf8' }).trim()).toBe(join(tmp, 'uidmap/usr/bin/newuidmap'));
  writeRootRange(true);
  node = await startOneNode({ site: 'sub', octets: [15, 5], sliverSubnet: (o) => `10.${65 + (o % 5)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
}, 240_000);

afterAll(async () => {
  try {
    await node?.close();
  } finally {
    process.env.PATH = pathBefore;
    for (const [f, text] of saved) {
      if (text === null) rmSync(f, { force: true });
      else writeFileSync(f, text);
    }
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}, 120_000);

const lxc = (tool: string, args: string[]) =>
  spawnSync('nsenter', [`--net=/run/netns/${node.ns}`, tool, '-P', join(node.stateDir, 'lxc'), '-n', `sl-${sliver.id}`, ...args], { encoding: 'utf8', env: process.env });

describe('slivers on a node with uidmap', () => {
  it("run unprivileged with host ids from root's subordinate range", async () => {
    sliver = await node.runningSliver('sub_one');
    expect(await until('ssh', async () => node.ssh(sliver.ports.first, 'root', 'id -u'), 30_000)).toBe('0');
    const init = Number(lxc('lxc-info', ['-pH']).stdout.trim());
    const status = readFileSync(`/proc/${init}/status`, 'utf8');
    expect(status).toMatch(new RegExp(`^Uid:\\t${FIRST}\\t`, 'm'));
    expect(status).toMatch(new RegExp(`^Gid:\\t${FIRST}\\t`, 'm'));
  }, 180_000);

  it('the old layout (ids from 1000000) is refused by LXC here', async () => {
    await node.stopAgent();
    expect(lxc('lxc-stop', ['-k']).status).toBe(0);
    const config = join(node.stateDir, 'lxc', `sl-${sliver.id}`, 'config');
    const good = readFileSync(config, 'utf8');
    expect(good).toContain(`lxc.idmap = u 0 ${FIRST} ${BLOCK}`);
    writeFileSync(config, good.replaceAll(` 0 ${FIRST} `, ' 0 1000000 '));
    const log = join(tmp, 'lxc-start.log');
    const r = lxc('lxc-start', ['-d', '-o', log, '-l', 'ERROR']);
    writeFileSync(config, good);
    expect(r.status).not.toBe(0);
    expect(readFileSync(log, 'utf8')).toMatch(/newuidmap|uid range/);
  }, 60_000);

  it('with no range for root, the agent stops at start with one line', () => {
    writeRootRange(false);
    const r = spawnSync(process.execPath, [AGENT, 'run', '--state-dir', node.stateDir, '--vm', 'off', '--log-level', 'error'], { encoding: 'utf8', timeout: 60_000, env: process.env });
    writeRootRange(true);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^planetlite-agent: newuidmap is installed .* root has no range in \/etc\/subuid and \/etc\/subgid; reserve them with: usermod --add-subuids 1000000-\d+ --add-subgids 1000000-\d+ root\n$/);
  }, 90_000);

  it('with the range back, the agent starts the sliver again', async () => {
    await node.startAgent();
    expect(await until('ssh after the restart', async () => node.ssh(sliver.ports.first, 'sub_one', 'cat /etc/slicename'), 60_000)).toBe('sub_one');
  }, 120_000);
});
