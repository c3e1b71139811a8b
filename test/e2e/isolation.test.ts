// End to end on one node: two slices, one sliver each (A and B), and root inside sliver A trying
// to get out: load a kernel module, mount the host's disks, make device nodes, set the host's
// clock or a global sysctl, see or touch the host's or B's processes and files, reach B over the
// network, and write past its disk quota. Every attempt must fail. Set up like sliver.test.ts,
// with its own namespace names, addresses (198.18.210-249.0/24) and sliver subnet
// (10.100-139.0.0/24) so that the e2e files can run side by side.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PlanetLiteClient, Sliver } from '@planetlite/api';
import { run } from '@planetlite/host';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

const DISK_A_MB = 32;

let node: OneNode;
let admin: PlanetLiteClient;
let NODE: string;
let dir: string;
let nodeId: string;
let a: Sliver;
let b: Sliver;

const sshFromNet = (port: number, user: string, command: string) => node.ssh(port, user, command);

/** Runs command as root in sliver s (stderr folded into stdout); its output and exit status. */
function inside(s: Sliver, command: string): { out: string; rc: number } {
  const raw = sshFromNet(s.ports.first, 'root', `{ ${command}\n} 2>&1; echo "@rc=$?"`);
  const m = /@rc=(\d+)$/.exec(raw);
  if (!m) throw new Error(`no exit status from sliver: ${raw}`);
  if (process.env.PLANETLITE_E2E_DEBUG) console.log(`[${s === a ? 'A' : 'B'}] ${command}\n${raw}`);
  return { out: raw.slice(0, m.index).trim(), rc: Number(m[1]) };
}

async function running(slice: string): Promise<Sliver> {
  const created = await admin.createSliver(slice, nodeId);
  return until(`sliver of ${slice} to run`, async () => {
    const s = await admin.getSliver(created.id);
    if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
    return s.state === 'running' ? s : null;
  }, 90_000);
}

beforeAll(async () => {
  node = await startOneNode({ site: 'iso', octets: [210, 30], sliverSubnet: (o) => `10.${100 + (o % 30)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
  ({ admin, ns: NODE, dir, nodeId } = node);
  await admin.createSlice({ name: 'iso_a', description: 'isolation A', url: 'https://example.org', image: 'tiny', resources: { disk_mb: DISK_A_MB } });
  await admin.createSlice({ name: 'iso_b', description: 'isolation B', url: 'https://example.org', image: 'tiny' });
  [a, b] = await Promise.all([running('iso_a'), running('iso_b')]);
  for (const s of [a, b]) await until(`ssh to ${s.id}`, async () => inside(s, 'id -u').out === '0', 30_000);
}, 240_000);

afterAll(async () => {
  await node?.close();
}, 120_000);

describe('root in a sliver cannot get out', () => {
  it('cannot load a kernel module', () => {
    // The seccomp policy refuses init_module/finit_module with EPERM, and behind it the kernel
    // checks CAP_SYS_MODULE (in the initial user namespace) before it looks at the image, so a
    // garbage module must come back "Operation not permitted", never "Exec format error" (parsed).
    const insmod = inside(a, 'head -c 4096 /dev/urandom > /tmp/evil.ko; insmod /tmp/evil.ko');
    expect(insmod.rc).not.toBe(0);
    expect(insmod.out).toMatch(/not permitted/i);
    // Nor point the kernel's module loader helper at a program of its own.
    const helper = inside(a, 'echo /tmp/evil > /proc/sys/kernel/modprobe');
    expect(helper.rc).not.toBe(0);
    // (A kernel without CONFIG_MODULES has no such sysctl at all.)
    if (existsSync('/proc/sys/kernel/modprobe')) expect(readFileSync('/proc/sys/kernel/modprobe', 'utf8').trim()).not.toBe('/tmp/evil');
  });

  it("cannot mount the host's disks, nor write a global sysctl even after remounting /proc/sys", async () => {
    // Note: the sliver is root of its own user and mount namespaces, so the kernel may let it
    // mount a tmpfs or its own proc there; that affects nobody else and is not asserted here.
    const loops = (await run('losetup', ['-j', join(dir, 'pool.img')])).stdout;
    const poolDev = loops.split(':')[0]!.trim();
    expect(poolDev).toMatch(/^\/dev\/loop\d+$/);
    const mnt = inside(a, `mkdir -p /mnt/x; mount -t btrfs ${poolDev} /mnt/x; echo "[$(ls /mnt/x)]"`);
    expect(mnt.out).toMatch(/mount:/); // an error from mount
    expect(mnt.out).toContain('[]'); // and nothing there
    const ls = inside(a, 'ls /dev/loop* /dev/sd* /dev/vd* /dev/nvme* /dev/btrfs-control');
    expect(ls.out).not.toMatch(/^\/dev\/(loop|sd|vd|nvme|btrfs)/m);
    // /proc/sys is mounted read-only. LXC made that mount inside the sliver's own namespaces, so
    // remounting it rw may be allowed; what matters is that a global sysctl stays unwritable
    // (its files belong to the host's root) and that the host's value is unchanged.
    const before = readFileSync('/proc/sys/kernel/panic_on_oops', 'utf8');
    const want = before.trim() === '1' ? '0' : '1';
    const remount = inside(a, `mount -o remount,rw /proc/sys; umount /proc/sys; echo ${want} > /proc/sys/kernel/panic_on_oops`);
    expect(remount.rc).not.toBe(0);
    expect(remount.out).toMatch(/can't create \/proc\/sys\/kernel\/panic_on_oops: (Permission denied|Read-only)/);
    expect(readFileSync('/proc/sys/kernel/panic_on_oops', 'utf8')).toBe(before);
  });

  it('cannot make device nodes', () => {
    for (const [kind, major, minor] of [['b', 7, 0], ['c', 1, 1], ['b', 8, 0]] as const) {
      const r = inside(a, `mknod /tmp/dev${kind}${major} ${kind} ${major} ${minor}; ls -l /tmp/dev${kind}${major}`);
      expect(r.out, `mknod ${kind} ${major} ${minor}`).toMatch(/mknod: .*not permitted/i);
      expect(r.rc).not.toBe(0);
    }
  });

  it("cannot set the host's clock or a global sysctl", () => {
    // busybox date prints its error yet exits 0, so the error text and the clock tell.
    const set = inside(a, 'date -s 2000-01-01');
    expect(set.out).toMatch(/can't set date: .*not permitted/i);
    expect(new Date().getUTCFullYear()).toBeGreaterThan(2020);
    expect(Math.abs(Number(inside(a, 'date +%s').out) * 1000 - Date.now())).toBeLessThan(600_000);

    const before = readFileSync('/proc/sys/kernel/panic', 'utf8');
    const want = before.trim() === '77' ? '78' : '77';
    for (const cmd of [`echo ${want} > /proc/sys/kernel/panic`, `sysctl -w kernel.panic=${want}`, 'echo 3 > /proc/sys/vm/drop_caches']) {
      const r = inside(a, cmd);
      expect(r.rc, cmd).not.toBe(0);
      expect(r.out, cmd).toMatch(/read-only|not permitted|permission denied/i);
    }
    expect(readFileSync('/proc/sys/kernel/panic', 'utf8')).toBe(before);
  });

  it("sees only its own processes, not the host's or sliver B's", async () => {
    // A process of B's that the host can see.
    sshFromNet(b.ports.first, 'root', 'setsid sleep 31337 </dev/null >/dev/null 2>&1 &');
    await until('B\'s sleep on the host', async () => (await run('pgrep', ['-f', 'sleep 31337']).catch(() => null))?.stdout.trim());

    const pids = inside(a, 'ls /proc | grep -E "^[0-9]+$"').out.split('\n').map(Number);
    expect(pids.length).toBeGreaterThan(0);
    expect(pids.length).toBeLessThan(20);
    expect(pids).toContain(1);
    expect(pids).not.toContain(process.pid);
    const ps = inside(a, 'ps -o pid,args').out;
    expect(ps).toMatch(/sshd/);
    expect(ps).not.toMatch(/sleep 31337/);
    expect(ps).not.toMatch(/node|vitest|systemd|lxc-start/);
    // Its pid 1 is its own init, whose root is its own.
    expect(inside(a, 'cat /proc/1/root/etc/slicename').out).toBe('iso_a');
    expect(inside(a, `kill -0 ${process.pid}`).rc).not.toBe(0);
  });

  it("cannot find sliver B's files", () => {
    const name = `marker-${node.tag}`;
    sshFromNet(b.ports.first, 'root', `echo secret-${node.tag} > /root/${name}; sync`);
    // On the host it is in B's root in the pool.
    // (A layered root, the default: the overlay the sliver sees is mounted on slivers/ID/rootfs.)
    const bRoot = join(dir, 'agent', 'pool', 'slivers', b.id, 'rootfs');
    expect(readFileSync(join(bRoot, 'root', name), 'utf8').trim()).toBe(`secret-${node.tag}`);

    expect(inside(a, `find / -xdev -name '${name}' 2>/dev/null`).out).toBe('');
    expect(inside(a, `find / -name '${name}' 2>/dev/null`).out).toBe('');
    expect(inside(a, `cat /proc/*/root/root/${name} 2>/dev/null; grep -rl secret-${node.tag} /proc/*/root/root 2>/dev/null`).out).toBe('');
    expect(inside(a, `ls ${bRoot}`).rc).not.toBe(0);
    expect(existsSync(join(dir, 'agent', 'pool', 'slivers', a.id, 'rootfs', 'root', name))).toBe(false);
    expect(existsSync(join(dir, 'agent', 'pool', 'slivers', a.id, 'rootfs', 'etc', 'slicename'))).toBe(true);
  });

  it("cannot reach sliver B's private address", async () => {
    expect(b.address).toMatch(/^10\./);
    // The node itself reaches B's sshd there, so the address is right and B listens.
    const fromNode = await run('ip', ['netns', 'exec', NODE, 'busybox', 'sh', '-c', `echo | busybox nc -w 3 ${b.address} 22`]);
    expect(fromNode.stdout).toMatch(/^SSH-/);
    const fromA = inside(a, `echo | nc -w 3 ${b.address} 22`);
    expect(fromA.out).not.toMatch(/SSH-/);
    const ping = inside(a, `ping -c 1 -W 2 ${b.address}`);
    expect(ping.rc).not.toBe(0);
  });

  it('cannot write past its disk quota, while B still can', () => {
    // btrfs qgroup limits may only bite once a transaction commits: sync and try again.
    const fill = inside(a, `dd if=/dev/zero of=/root/fill bs=1M count=${DISK_A_MB * 2}; r1=$?; sync; dd if=/dev/zero of=/root/fill2 bs=1M count=${DISK_A_MB * 2}; r2=$?; sync; echo "@dd=$r1,$r2"`);
    expect(fill.out).toMatch(/quota/i);
    expect(fill.out).toMatch(/@dd=\d+,\d+$/);
    expect(fill.out).not.toMatch(/@dd=0,0$/); // at least one dd failed
    const written = inside(a, 'cat /root/fill /root/fill2 2>/dev/null | wc -c').out;
    expect(written).toMatch(/^\d+$/);
    expect(Number(written)).toBeLessThanOrEqual(DISK_A_MB * 1024 * 1024);

    const ok = inside(b, 'dd if=/dev/zero of=/root/fill bs=1M count=8 && sync');
    expect(ok.out).not.toMatch(/quota/i);
    expect(ok.rc).toBe(0);
    expect(inside(b, 'wc -c < /root/fill').out).toBe(String(8 * 1024 * 1024));
  });
});
