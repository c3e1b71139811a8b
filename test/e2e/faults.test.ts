// End to end on one node: what the agent does when the node or a sliver runs out of room, injected
// for real. (1) The node's btrfs pool filled by a file the test preallocates in it (ENOSPC): a new
// sliver fails with a pool_full error in the API, its neighbour runs on, the ledger and the image
// index are untouched, and once the file is gone the sliver is built without any new document.
// (2) An image fetched from the registry, and one imported by hand, into the full pool: both fail
// with the pool named as full, no partial image is left or used, and both succeed once space is
// back. (3) A sliver whose own disk is at its quota (EDQUOT) when its slice's keys change: it runs
// on with its old keys and a sliver_disk_full error, and gets the new keys once it has room.
// (4) A sliver's memory cgroup at its limit: the process the kernel kills there is told as a
// sliver.oom_killed event; the sliver, its neighbour and the node run on. (5) Agents SIGKILLed
// while an image fetch is in flight, then while the fetched image is being imported: the next
// agent finishes the fetch, never uses the partial image, and with everything deleted 0 leaks.
// (6) An agent (--vm auto) SIGKILLed while a VM sliver starts: one qemu, the sliver up, 0 leaks.
// Addresses 198.18.60-69, sliver subnets 10.190-199.0.0/24.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createReadStream, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Event, PlanetLiteClient, Sliver } from '@planetlite/api';
import { readLedger } from '@planetlite/agent';
import { memoryCgroup } from '../harness/cgroup.ts';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';
import { nodeLeaks, countLeaks } from '../harness/leaks.ts';
import { AGENT_BIN, AgentProcess } from '../harness/testbed.ts';

let node: OneNode;
let admin: PlanetLiteClient;
/** The files that fill the pool, removed again also when a test fails. */
let fill: string[] = [];
/** An agent run as a process of its own (to be SIGKILLed), stopped also when a test fails. */
let agentProcess: AgentProcess | null = null;

beforeAll(async () => {
  node = await startOneNode({ site: 'flt', octets: [60, 10], sliverSubnet: (o) => `10.${190 + (o % 10)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' }, maxSlivers: 8 });
  ({ admin } = node);
}, 240_000);

afterAll(async () => {
  await agentProcess?.stop();
  if (node) freePool();
  await node?.close();
}, 180_000);

const pool = () => join(node.stateDir, 'pool');
const seconds = (since: number) => ((Date.now() - since) / 1000).toFixed(1);

/** Preallocates files at the top of the pool until btrfs has no data space left (fallocate
 * reserves extents without writing them: instant, and the loop file stays sparse). */
function fillPool(): void {
  for (const size of ['256M', '32M', '4M', '512K', '64K', '4K']) {
    for (;;) {
      const file = join(pool(), `fill-${node.tag}.${fill.length}`);
      try {
        execFileSync('fallocate', ['-l', size, file], { stdio: 'ignore' });
        fill.push(file);
      } catch {
        rmSync(file, { force: true });
        break;
      }
    }
  }
  execFileSync('btrfs', ['filesystem', 'sync', pool()]);
}

function freePool(): void {
  for (const file of fill) rmSync(file, { force: true });
  fill = [];
  execFileSync('btrfs', ['filesystem', 'sync', pool()]);
}

/** Names in a pool folder (images/, slivers/): a *.partial there is an import or root cut short. */
const poolEntries = (folder: string) => readdirSync(join(pool(), folder)).sort();
const ledger = () => readLedger(node.stateDir);
/** A ledger record without its `done` mark, which the agent writes up to a second after a build. */
const claimed = (r: { done?: string } | undefined) => {
  if (!r) return r;
  const { done: _, ...rest } = r;
  return rest;
};
const imageIndex = () => readFileSync(join(node.stateDir, 'images.json'), 'utf8');

describe('the node pool full (ENOSPC)', () => {
  let neighbour: Sliver;

  it('a new sliver fails with pool_full, nothing else is touched, and it is built by itself once space returns', async () => {
    neighbour = await node.runningSliver('flt_one');
    const neighbourRecord = ledger().find((r) => r.id === neighbour.id);
    const images = imageIndex();
    const imageVolumes = poolEntries('images');

    fillPool();
    console.log(`pool filled with ${fill.length} preallocated files; df: ${execFileSync('df', ['-h', '--output=size,used,avail', pool()], { encoding: 'utf8' }).split('\n')[1]?.trim()}`);
    const filledAt = Date.now();
    await admin.createSlice({ name: 'flt_two', description: 'e2e', url: 'https://example.org', image: 'tiny' });
    const created = await admin.createSliver('flt_two', node.nodeId);
    const refused = await until('the sliver to show the full pool', async () => {
      const s = await admin.getSliver(created.id);
      return s.error?.startsWith('pool_full') ? s : null;
    }, 60_000);
    console.log(`new sliver in a full pool, ${seconds(filledAt)} s: ${refused.state}: ${refused.error}`);
    expect(refused.state).toBe('failed');
    // A layered root fails as its folders are made; a snapshot root (no data of its own yet) at
    // its first file.
    expect(refused.error).toMatch(/^pool_full: the storage pool at \S+ is full \(no space left on device\) while (making the root of sliver \S+|writing \/etc\/slicename).*; retried every few seconds$/);

    // Nothing half-made, nothing else touched: the failed build was undone (no root, no
    // partial), the neighbour's record and the image index are as they were, and it still runs.
    expect(poolEntries('slivers')).toEqual([neighbour.id]);
    expect(poolEntries('images')).toEqual(imageVolumes);
    expect(claimed(ledger().find((r) => r.id === neighbour.id))).toEqual(claimed(neighbourRecord));
    expect(imageIndex()).toBe(images);
    expect(await node.sshAsync(neighbour.ports.first, 'flt_one', 'cat /etc/slicename')).toBe('flt_one');
    // Inside it, writes fail as on any full disk; the sliver itself is fine.
    expect(await node.sshAsync(neighbour.ports.first, 'root', 'dd if=/dev/zero of=/root/x bs=64k count=16 2>&1; rm -f /root/x')).toMatch(/No space left on device/);

    // Still refused, pass after pass (retried every 10 s), and never taken for built.
    await new Promise((r) => setTimeout(r, 12_000));
    expect((await admin.getSliver(created.id)).error).toMatch(/^pool_full/);

    freePool();
    const freedAt = Date.now();
    const built = await until('the sliver to be built with no new document', async () => {
      const s = await admin.getSliver(created.id);
      return s.state === 'running' && s.error === null ? s : null;
    }, 90_000);
    console.log(`space back → sliver running: ${seconds(freedAt)} s`);
    expect(await until('ssh into it', async () => node.sshAsync(built.ports.first, 'flt_two', 'cat /etc/slicename'), 30_000)).toBe('flt_two');
    expect(poolEntries('slivers')).toEqual([neighbour.id, created.id].sort());
    expect(poolEntries('slivers').concat(poolEntries('images')).filter((e) => e.endsWith('.partial'))).toEqual([]);
    await admin.deleteSlice('flt_two');
  }, 300_000);

  it('an image fetched into a full pool, or imported by hand, fails with the pool named and succeeds once space is back', async () => {
    const file = join(node.dir, 'tiny.tar');
    // The same root filesystem with one more file: another sha256, so a new image to import.
    const other = join(node.dir, 'tinyfull.tar');
    execFileSync('cp', [file, other]);
    writeFileSync(join(node.dir, 'marker'), 'tinyfull\n');
    execFileSync('tar', ['--append', '-f', other, '-C', node.dir, 'marker']);
    const size = statSync(other).size;
    const images = imageIndex();
    const imageVolumes = poolEntries('images');

    fillPool();
    // By hand: one line, non-zero exit, the pool named; nothing left in the pool or the index.
    let cli: { status: number | null; stderr: string } = { status: 0, stderr: '' };
    try {
      execFileSync('node', [AGENT_BIN, 'image', 'import', 'tinyhand', other, '--state-dir', node.stateDir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    } catch (err) {
      cli = err as { status: number | null; stderr: string };
    }
    console.log(`image import into a full pool: exit ${cli.status}: ${cli.stderr.trim()}`);
    expect(cli.status).toBe(1);
    expect(cli.stderr).toMatch(/^planetlite-agent: the storage pool at \S+ is full \(no space left on device\) while importing image [0-9a-f]{64}; free space in it or grow it \(pool_full\)\n$/);
    expect(poolEntries('images')).toEqual(imageVolumes);
    expect(imageIndex()).toBe(images);

    // Fetched: published through the registry, asked for by a new slice's sliver.
    const image = await admin.uploadImage({ name: 'tinyfull', kinds: 'lxc', version: '1' }, createReadStream(other), { size });
    await admin.createSlice({ name: 'flt_fetch', description: 'e2e', url: 'https://example.org', image: 'tinyfull' });
    const created = await admin.createSliver('flt_fetch', node.nodeId);
    const refused = await until('the fetch to fail on the full pool', async () => {
      const s = await admin.getSliver(created.id);
      return s.error?.includes('pool_full') ? s : null;
    }, 120_000);
    console.log(`image fetched into a full pool: ${refused.state}: ${refused.error}`);
    expect(refused.state).toBe('failed');
    expect(refused.error).toMatch(/^image tinyfull: import: pool_full: the storage pool at \S+ is full \(no space left on device\) while importing image [0-9a-f]{64}/);
    // A partial image is never an image: no subvolume, no index entry, no sliver root from it.
    expect(poolEntries('images')).toEqual(imageVolumes);
    expect(imageIndex()).toBe(images);
    expect(poolEntries('slivers')).not.toContain(created.id);

    freePool();
    const freedAt = Date.now();
    const built = await until('the fetch to be retried and the sliver to run', async () => {
      const s = await admin.getSliver(created.id);
      return s.state === 'running' && s.error === null ? s : null;
    }, 150_000);
    console.log(`space back → fetched image imported, sliver running: ${seconds(freedAt)} s`);
    expect(await until('ssh into it', async () => node.sshAsync(built.ports.first, 'flt_fetch', 'cat /marker /etc/slicename'), 30_000)).toBe('tinyfull\nflt_fetch');
    expect(poolEntries('images')).toEqual([...imageVolumes, image.sha256].sort());

    // And by hand, now that there is room.
    const out = execFileSync('node', [AGENT_BIN, 'image', 'import', 'tinyhand', other, '--state-dir', node.stateDir], { encoding: 'utf8', timeout: 120_000 });
    expect(out).toBe(`image tinyhand is sha256:${image.sha256} (${size} bytes) on this node\n`);
    await admin.deleteSlice('flt_fetch');
  }, 400_000);
});

describe("a sliver's own disk at its quota (EDQUOT)", () => {
  it('new keys: it runs on with the old ones and a sliver_disk_full error, and gets them once it has room', async () => {
    const s = await node.runningSliver('flt_quota');
    await admin.updateSlice('flt_quota', { resources: { disk_mb: 32 } });
    // Filled from inside until btrfs refuses (the new quota is set by the pass the change starts).
    const full = await until("the sliver's disk to be at its quota", async () => {
      const out = await node.sshAsync(s.ports.first, 'root', 'dd if=/dev/zero of=/root/fill bs=1M count=64 2>&1; sync; true');
      return /Disk quota exceeded/.test(out) ? out : null;
    }, 60_000);
    expect(full).toMatch(/Disk quota exceeded/);

    const key = join(node.dir, 'second_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'second', '-f', key]);
    const me = await admin.me();
    const added = await admin.addKey(me.id, readFileSync(`${key}.pub`, 'utf8'));
    const shown = await until('the sliver to show its disk full', async () => {
      const now = await admin.getSliver(s.id);
      return now.error?.startsWith('sliver_disk_full') ? now : null;
    }, 60_000);
    console.log(`new keys for a sliver whose disk is full: ${shown.state}: ${shown.error}`);
    expect(shown.state).toBe('running');
    expect(shown.error).toBe("sliver_disk_full: the sliver's disk (its quota of 32 MiB) is full: its new ssh keys could not be written into it; they are once it has room; retried every few seconds");
    // Its old keys still work; the new one does not yet.
    expect(await node.sshAsync(s.ports.first, 'flt_quota', 'cat /etc/slicename')).toBe('flt_quota');
    expect(() => node.ssh(s.ports.first, 'flt_quota', 'true', key)).toThrow();

    await node.sshAsync(s.ports.first, 'root', 'rm -f /root/fill; sync');
    const freedAt = Date.now();
    await until('the new key to be written and the error to go', async () => {
      const now = await admin.getSliver(s.id);
      return now.state === 'running' && now.error === null;
    }, 90_000);
    console.log(`room back → keys written: ${seconds(freedAt)} s`);
    expect(node.ssh(s.ports.first, 'flt_quota', 'cat /etc/slicename', key)).toBe('flt_quota');
    await admin.deleteKey(me.id, added.id);
    await admin.deleteSlice('flt_quota');
  }, 240_000);
});

describe("a sliver's memory cgroup at its limit", () => {
  it('a process OOM-killed inside it is told as an event; the sliver, its neighbour and the node run on', async () => {
    const s = await node.runningSliver('flt_oom');
    await admin.updateSlice('flt_oom', { resources: { memory_mb: 64 } });
    await until('the 64 MiB limit to be live', async () => readFileSync(join(memoryCgroup(s.id), 'memory.limit_in_bytes'), 'utf8').trim() === String(64 * 2 ** 20), 60_000);
    const neighbour = (await admin.listSlivers('flt_one'))[0]!;
    const pid = process.pid;

    // 200 MiB of anonymous memory in a 64 MiB sliver on a node with no swap: the kernel kills it.
    const startedAt = Date.now();
    const out = await node.sshAsync(s.ports.first, 'root', `awk 'BEGIN{s=sprintf("%1048576s",""); for(i=0;i<200;i++) a[i]=s" "i}'; echo "exit $?"`);
    expect(out).toMatch(/exit 137$/);
    const ev = await until('the sliver.oom_killed event', async () => ((await admin.listEvents({ type: 'sliver.oom_killed' })) as Event[]).find((e) => e.sliver === s.id) ?? null, 60_000).catch((err: Error) => {
      // What the kernel counted, and what the agent still holds to send.
      const counted = readFileSync(join(memoryCgroup(s.id), 'memory.oom_control'), 'utf8').replace(/\n/g, ' ');
      throw new Error(`${err.message}; memory.oom_control: ${counted}; events the agent holds: ${node.agent?.outbox.size}`);
    });
    console.log(`OOM kill inside a 64 MiB sliver → event in ${seconds(startedAt)} s: ${JSON.stringify(ev.data)}`);
    expect(ev.data).toMatchObject({ slice: 'flt_oom', kills: 1, memory_limit_mb: 64, reason: '1 process of this sliver killed by the kernel at its memory limit of 64 MiB; the sliver runs on' });
    // Only that process: the sliver, its neighbour and the agent (this process) run on.
    expect(await node.sshAsync(s.ports.first, 'flt_oom', 'cat /etc/slicename')).toBe('flt_oom');
    expect(await node.sshAsync(neighbour.ports.first, 'flt_one', 'cat /etc/slicename')).toBe('flt_one');
    expect(process.pid).toBe(pid);
    const now = await admin.getSliver(s.id);
    expect([now.state, now.error]).toEqual(['running', null]);
    expect(((await admin.listEvents({ type: 'sliver.oom_killed' })) as Event[]).filter((e) => e.sliver === neighbour.id)).toEqual([]);
  }, 240_000);
});

describe('agents killed while an image fetch is in flight', () => {
  it('killed while fetching, then while importing: the next agent finishes, the partial image is never used, and 0 leaks once all is deleted', async () => {
    // The tiny image with 48 MiB of random bytes and a marker: a fetch and an import that take a while.
    const file = join(node.dir, 'tinykill.tar');
    execFileSync('cp', [join(node.dir, 'tiny.tar'), file]);
    execFileSync('sh', ['-c', `head -c ${48 * 2 ** 20} /dev/urandom > blob && echo tinykill > marker && tar --append -f "$1" blob marker`, 'sh', file], { cwd: node.dir });
    const blobSha = execFileSync('sha256sum', [join(node.dir, 'blob')], { encoding: 'utf8' }).split(' ')[0];
    const image = await admin.uploadImage({ name: 'tinykill', kinds: 'lxc', version: '1' }, createReadStream(file), { size: statSync(file).size });
    const images = imageIndex();

    await node.stopAgent();
    const start = () => (agentProcess = new AgentProcess(['run', '--state-dir', node.stateDir, '--log-level', 'debug']));
    let agent = start();
    await agent.waitFor('agent running', (r) => r.msg === 'agent running');
    // \`run\` runs itself again with the daemon's V8 flags, keeping its pid (node-flags.ts).
    expect(readFileSync(`/proc/${agent.pid}/cmdline`, 'utf8').split('\0')).toEqual(expect.arrayContaining(['--max-semi-space-size=1', '--optimize-for-size']));
    // 1: SIGKILLed with its commands once pieces have come, the archive part on disk.
    await admin.createSlice({ name: 'flt_kill', description: 'e2e', url: 'https://example.org', image: 'tinykill' });
    const created = await admin.createSliver('flt_kill', node.nodeId);
    await agent.waitFor('the fetch to start', (r) => r.msg === 'bittorrent peer connected' && r.image === 'tinykill');
    const archive = join(node.stateDir, 'images', image.sha256);
    // Blocks written, not the apparent size (webtorrent may lay the file out sparse).
    const onDisk = () => Number(execFileSync('du', ['-s', '--block-size=1', archive], { encoding: 'utf8' }).split('\t')[0]);
    await until('pieces on disk', async () => onDisk() > 8 * 2 ** 20, 30_000).catch(() => undefined);
    agent.kill('SIGKILL', true);
    await agent.exited;
    console.log(`agent 1 killed while fetching: ${onDisk()} of ${statSync(file).size} archive bytes on disk`);
    expect(poolEntries('images').filter((e) => e.startsWith(image.sha256))).toEqual([]);
    expect(imageIndex()).toBe(images);

    // 2: the next agent resumes the fetch; SIGKILLed with its tar once the image's partial subvolume is there.
    agent = start();
    await agent.waitFor('the import to start', (r) => r.msg === 'importing a fetched image' && r.image === 'tinykill', { ms: 120_000 });
    const partial = await until('the partial subvolume', async () => poolEntries('images').find((e) => e.startsWith(`${image.sha256}.`) && e.endsWith('.partial')), 30_000);
    agent.kill('SIGKILL', true);
    await agent.exited;
    agentProcess = null;
    console.log(`agent 2 killed while importing: ${partial} left in the pool`);
    // Never an image: not under its name, not in the index, no root made from it.
    expect(poolEntries('images')).not.toContain(image.sha256);
    expect(imageIndex()).toBe(images);
    expect(poolEntries('slivers')).not.toContain(created.id);

    const restartedAt = Date.now();
    await node.startAgent();
    const s = await until('the sliver to run from the whole image', async () => {
      const now = await admin.getSliver(created.id);
      return now.state === 'running' ? now : null;
    }, 180_000);
    console.log(`third agent → sliver running: ${seconds(restartedAt)} s`);
    expect(await until('ssh into it', async () => node.sshAsync(s.ports.first, 'flt_kill', 'cat /marker; sha256sum /blob'), 30_000)).toBe(`tinykill\n${blobSha}  /blob`);
    expect(poolEntries('images').filter((e) => e.endsWith('.partial'))).toEqual([]);
    expect(poolEntries('images')).toContain(image.sha256);

    // Everything deleted: nothing of any kind left on the node.
    for (const slice of ['flt_kill', 'flt_one', 'flt_oom']) await admin.deleteSlice(slice);
    await until('the ledger to be empty', async () => ledger().length === 0, 120_000);
    const leaks = countLeaks([await nodeLeaks({ stateDir: node.stateDir, ns: node.ns, poolFile: join(node.dir, 'pool.img') })]);
    console.log(`leaks after deleting everything: ${JSON.stringify(leaks.byKind)}`);
    expect(leaks.lines).toEqual([]);
  }, 480_000);
});

describe('an agent killed while a VM sliver starts', () => {
  it('the next agent brings the VM up once (one qemu), and deleting it leaves 0 leaks', async () => {
    await node.stopAgent();
    const agent = (agentProcess = new AgentProcess(['run', '--state-dir', node.stateDir, '--vm', 'auto', '--log-level', 'debug']));
    await agent.waitFor('agent running', (r) => r.msg === 'agent running');
    await until('the node to report that it runs VMs', async () => (await admin.getNode(node.nodeId)).capabilities.kvm, 240_000);
    await admin.createSlice({ name: 'flt_vm', description: 'e2e', url: 'https://example.org', kind: 'kvm', image: 'tiny', resources: { memory_mb: 128 } });
    const created = await admin.createSliver('flt_vm', node.nodeId);
    // SIGKILLed with its commands a moment after the VM's lifecycle step began (qemu starting).
    await agent.killWhen('the VM start', (r) => r.msg === 'reconcile step' && r.sliver === created.id && r.step === 'lifecycle', { group: true, delayMs: 300, ms: 120_000 });
    await agent.exited;
    agentProcess = null;
    const qemus = async () => (await nodeLeaks({ stateDir: node.stateDir, ns: node.ns, poolFile: join(node.dir, 'pool.img') }))['VM processes'];
    console.log(`agent killed while the VM started: ${(await qemus()).length} qemu process(es) left running`);

    const restartedAt = Date.now();
    await node.startAgent({ vm: 'auto' });
    const s = await until('the VM sliver to run', async () => {
      const now = await admin.getSliver(created.id);
      return now.state === 'running' ? now : null;
    }, 300_000);
    expect(await until('ssh into the VM', async () => node.sshAsync(s.ports.first, 'flt_vm', 'cat /etc/slicename; cat /sys/class/dmi/id/sys_vendor').catch(() => null), 180_000)).toBe('flt_vm\nQEMU');
    console.log(`next agent → VM sliver answering ssh: ${seconds(restartedAt)} s`);
    expect(await qemus()).toHaveLength(1);

    await admin.deleteSlice('flt_vm');
    await until('the ledger to be empty', async () => ledger().length === 0, 120_000);
    const leaks = countLeaks([await nodeLeaks({ stateDir: node.stateDir, ns: node.ns, poolFile: join(node.dir, 'pool.img') })]);
    console.log(`leaks after deleting the VM: ${JSON.stringify(leaks.byKind)}`);
    expect(leaks.lines).toEqual([]);
  }, 900_000);
});
