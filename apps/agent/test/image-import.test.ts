// `planetlite-agent image import` as separate processes on one fresh node: the pool is created,
// formatted and mounted once however many processes race for it, and every import lands in the
// image index (the state dir's lock). Needs root, btrfs-progs and losetup.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { tryRun } from '@planetlite/host';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const AGENT_MAIN = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const exec = promisify(execFile);

let dir: string;
let stateDir: string;
let image: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'pl-import-'));
  stateDir = join(dir, 'agent');
  image = join(dir, 'tiny.tar');
  execFileSync('bash', [join(ROOT, 'infra/images/tiny/build.sh'), image]);
});

afterAll(async () => {
  await tryRun('umount', ['-l', join(stateDir, 'pool')]);
  for (const line of (await tryRun('losetup', ['-j', join(dir, 'pool.img')]))?.stdout.split('\n') ?? []) {
    const dev = line.split(':')[0];
    if (dev) await tryRun('losetup', ['-d', dev]);
  }
  rmSync(dir, { recursive: true, force: true });
});

function agent(...args: string[]) {
  return exec(process.execPath, [AGENT_MAIN, ...args, '--state-dir', stateDir], { encoding: 'utf8' });
}

describe('planetlite-agent image import', () => {
  it('three processes at once on a node without a pool: one pool, mounted once, every image indexed', async () => {
    const pool = ['--pool', join(dir, 'pool.img'), '--pool-size', '512M'];
    const names = ['tiny-a', 'tiny-b', 'tiny-c'];
    const results = await Promise.all(names.map((n) => agent('image', 'import', n, image, ...pool)));
    for (const r of results) expect(r.stdout).toMatch(/^image tiny-[abc] is sha256:[0-9a-f]{64} \(\d+ bytes\) on this node$/m);

    const loops = (await tryRun('losetup', ['-j', join(dir, 'pool.img')]))?.stdout.trim().split('\n').filter(Boolean) ?? [];
    expect(loops).toHaveLength(1);
    const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => l.split(' ')[1] === join(stateDir, 'pool'));
    expect(mounts).toHaveLength(1);
    expect(mounts[0]).toMatch(/ btrfs /);

    const index = JSON.parse(readFileSync(join(stateDir, 'images.json'), 'utf8')) as Array<{ name: string; sha256: string }>;
    expect(index.map((i) => i.name).sort()).toEqual(names);
    expect(new Set(index.map((i) => i.sha256)).size).toBe(1);
  }, 120_000);

  it('says in one line what is wrong with a missing archive, and leaves the index as it was', async () => {
    const before = readFileSync(join(stateDir, 'images.json'), 'utf8');
    const err = await agent('image', 'import', 'nope', join(dir, 'missing.tar')).then(() => null, (e: { code: number; stderr: string }) => e);
    expect(err?.code).toBe(1);
    expect(err?.stderr.trim().split('\n')).toHaveLength(1);
    expect(err?.stderr).toMatch(/^planetlite-agent: .*missing\.tar/);
    expect(readFileSync(join(stateDir, 'images.json'), 'utf8')).toBe(before);
  }, 60_000);
});
