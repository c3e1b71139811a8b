// scripts/testbed.sh as a researcher uses it: `up 2` brings a registry and two node namespaces
// with agents, a sliver on node 2 answers ssh at the node's address, and `down` leaves no
// namespace, agent, mount, loop device or data behind.
import { afterAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DATA = join(ROOT, '.data/testbed');
// Async: a worker blocked for a minute misses vitest's RPC deadline.
const testbed = async (...args: string[]) => (await promisify(execFile)('bash', [join(ROOT, 'scripts/testbed.sh'), ...args], { encoding: 'utf8', timeout: 300_000 })).stdout;
const pl = (...args: string[]) =>
  execFileSync(join(ROOT, 'node_modules/.bin/planetlite'), args, { encoding: 'utf8', env: { ...process.env, PLANETLITE_CONFIG: join(DATA, 'cli-config.json') } });

afterAll(() => {
  if (existsSync(join(DATA, 'registry.pid'))) spawnSync('bash', [join(ROOT, 'scripts/testbed.sh'), 'down'], { stdio: 'ignore', timeout: 300_000 });
}, 300_000);

describe('scripts/testbed.sh', () => {
  it('up 2: a registry and two nodes, online, and a sliver reachable at its node', async () => {
    const t0 = performance.now();
    const out = await testbed('up', '2');
    console.log(`testbed up 2: ${Math.round(performance.now() - t0)} ms`);
    expect(out).toMatch(/Testbed up: a registry and 2 node\(s\)/);
    const nodes = JSON.parse(pl('node', 'ls', '--json')) as Array<{ hostname: string; address: string; state: string }>;
    expect(nodes.map((n) => [n.hostname, n.address, n.state]).sort()).toEqual([
      ['node1.tb.planetlite.test', '198.19.1.1', 'online'],
      ['node2.tb.planetlite.test', '198.19.2.1', 'online'],
    ]);
    pl('slice', 'create', 'tb_try', '--description', 'testbed test', '--url', 'https://example.org', '--image', 'tiny');
    pl('sliver', 'create', 'tb_try', 'node2.tb.planetlite.test', '--wait');
    const ssh = ['-i', join(DATA, 'id_ed25519'), '-p', '20000', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=5'];
    let answer = '';
    for (let i = 0; i < 50 && !answer; i++) answer = spawnSync('ssh', [...ssh, 'tb_try@198.19.2.1', 'cat /etc/slicename'], { encoding: 'utf8' }).stdout.trim();
    expect(answer).toBe('tb_try');
    expect(await testbed('status')).toMatch(/registry https:\/\/127\.0\.0\.1:8090/);
    // Every node pinned the registry's CA at enrollment, the same one the CLI pinned at login.
    const cli = JSON.parse(readFileSync(join(DATA, 'cli-config.json'), 'utf8')) as { known_registries: Record<string, { ca_pin: string }> };
    const pin = cli.known_registries['https://127.0.0.1:8090']?.ca_pin;
    expect(pin).toMatch(/^sha256:[0-9a-f]{64}$/);
    for (const i of [1, 2]) expect(JSON.parse(readFileSync(`/var/lib/planetlite/testbed/node${i}/node.json`, 'utf8')).ca_pin).toBe(pin);
  }, 360_000);

  it('down leaves nothing', async () => {
    const out = await testbed('down');
    expect(out).toMatch(/node1: released\n.*node2: released\n.*testbed: down/);
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toMatch(/pl-tb-node/);
    expect(readFileSync('/proc/mounts', 'utf8')).not.toMatch(/planetlite\/testbed/);
    expect(execFileSync('losetup', ['-a'], { encoding: 'utf8' })).not.toMatch(/planetlite\/testbed/);
    expect(execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })).not.toMatch(/planetlite\/testbed|\.data\/testbed/);
    expect(existsSync(DATA)).toBe(false);
    expect(existsSync('/var/lib/planetlite/testbed')).toBe(false);
  }, 300_000);
});
