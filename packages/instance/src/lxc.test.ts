// The LXC driver against real containers on this host: the tiny image booted unprivileged, its
// confinement and limits (no btrfs subvolumes on a btrfs pool), the lifecycle, and sshd reached
// through a veth the test makes.
import { randomInt, randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, tryRun } from '@planetlite/host';
import { LxcDriver, SECCOMP_POLICY_FILE, containerName, renderSeccompPolicy, type InstanceSpec } from './index.js';

const buildScript = fileURLToPath(new URL('../../../infra/images/tiny/build.sh', import.meta.url));
const isRoot = process.getuid?.() === 0;

/** Capability numbers from linux/capability.h that every sliver must have lost. */
const DROPPED = { sys_module: 16, sys_rawio: 17, sys_boot: 22, sys_time: 25, mknod: 27, mac_override: 32, mac_admin: 33 };
/** One raw btrfs ioctl for a sliver with no btrfs tool: `btrfs-ioctl OP DIR [NAME [SRC]]`. Perl
 * (copied in with its libraries) needs none of its modules for this. OP: subvol, snap, destroy
 * (struct btrfs_ioctl_vol_args), subvol2, snap2, destroy2 (struct btrfs_ioctl_vol_args_v2), or
 * getflags; OP+hi also sets bit 32 of the request, which the kernel ignores and a filter must too. */
const BTRFS_IOCTL = String.raw`#!/usr/bin/perl
($op, $dir, $name, $src) = @ARGV;
$hi = ($op =~ s/\+hi$//) ? 1 << 32 : 0;
%cmd = (snap => 0x50009401, subvol => 0x5000940e, destroy => 0x5000940f, snap2 => 0x50009417, subvol2 => 0x50009418, destroy2 => 0x5000943f, getflags => 0x80089419);
exists $cmd{$op} or die "unknown op $op\n";
open(DIR, '<', $dir) or die "open $dir: $!\n";
$fd = 0;
if ($src) { open(SRC, '<', $src) or die "open $src: $!\n"; $fd = fileno(SRC); }
$buf = $op eq 'getflags' ? pack('Q', 0) : $op =~ /2$/ ? pack('q Q Q x32 a4040', $fd, 0, 0, $name) : pack('q a4088', $fd, $name);
if (syscall(16, fileno(DIR), $cmd{$op} | $hi, $buf) == -1) { print STDERR "$op: $!\n"; exit 1; }
print $op eq 'getflags' ? unpack('Q', $buf) : 'ok', "\n";
`;
const SSH_OPTS = ['-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR'];

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** The first bytes sshd sends on addr:22, or null if nothing answers. */
function sshBanner(address: string): Promise<string | null> {
  return new Promise((resolve) => {
    const sock = connect({ host: address, port: 22, timeout: 1000 });
    sock.once('data', (d) => {
      sock.destroy();
      resolve(d.toString('latin1'));
    });
    sock.once('error', () => resolve(null));
    sock.once('timeout', () => {
      sock.destroy();
      resolve(null);
    });
  });
}

/** Cgroup directories LXC made for a container that still exist, in any hierarchy. */
async function cgroupsOf(name: string): Promise<string[]> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').filter((l) => / cgroup2? /.test(l));
  const dirs = mounts.flatMap((l) => ['lxc.monitor.', 'lxc.payload.'].map((p) => join(l.split(' ')[1] ?? '', p + name)));
  const found = await Promise.all(dirs.map((d) => stat(d).then(() => d, () => null)));
  return found.filter((d): d is string => d !== null);
}

describe.skipIf(!isRoot)('lxc driver on this host (needs root)', () => {
  let work = '';
  let image = '';
  let key = '';
  let driver: LxcDriver;
  const drivers: LxcDriver[] = [];
  /** Host changes the tests make themselves (veths, namespaces), undone newest first. */
  const cleanups: Array<() => Promise<unknown>> = [];
  const idmapBase = 0x10000 * randomInt(100, 20000);

  /** A fresh rootfs from the tiny image, with the slice's name and the test's ssh key; in
   * patch.rootfs if given (made if missing), else in a new directory of work. */
  async function sliver(slice: string, patch: Partial<InstanceSpec> = {}): Promise<InstanceSpec> {
    const id = randomUUID();
    const rootfs = patch.rootfs ?? join(work, 'rootfs', id);
    await mkdir(rootfs, { recursive: true });
    await run('tar', ['-xf', image, '-C', rootfs]);
    await writeFile(join(rootfs, 'etc/slicename'), `${slice}\n`);
    await writeFile(join(rootfs, 'root/.ssh/authorized_keys'), await readFile(`${key}.pub`), { mode: 0o600 });
    return { id, hostname: slice, rootfs, memoryMb: 64, cpuShares: 512, pids: 128, idmapBase, net: null, ...patch };
  }

  /** A btrfs filesystem on a sparse loop file in work, mounted with user_subvol_rm_allowed (so
   * the kernel itself would let a sliver remove subvolumes, too). Unmounted and detached in
   * afterAll, even when a test fails half-way, as packages/storage's test pool is. */
  async function btrfsPool(): Promise<string> {
    const file = join(work, 'pool.img');
    const mnt = join(work, 'pool');
    await mkdir(mnt);
    await run('truncate', ['-s', '512M', file]);
    await run('mkfs.btrfs', ['-q', file]);
    cleanups.push(async () => {
      await tryRun('umount', ['--lazy', mnt]);
      const loops = await tryRun('losetup', ['--list', '--noheadings', '--output', 'NAME', '--associated', file]);
      for (const dev of loops?.stdout.split('\n').filter(Boolean) ?? []) await tryRun('losetup', ['--detach', dev.trim()]);
    });
    const dev = (await run('losetup', ['--find', '--show', file])).stdout.trim();
    await run('mount', ['-t', 'btrfs', '-o', 'user_subvol_rm_allowed', dev, mnt]);
    return mnt;
  }

  /** Paths of the subvolumes on a btrfs filesystem. */
  async function subvolumes(mnt: string): Promise<string[]> {
    const { stdout } = await run('btrfs', ['subvolume', 'list', mnt]);
    return stdout.split('\n').map((l) => / path (.*)$/.exec(l)?.[1]).filter((p): p is string => p !== undefined).sort();
  }

  /** A /30 in 10.250.0.0/16 for a veth: host end .1, sliver end .2 of the block. */
  function subnet(): { host: string; sliver: string } {
    const x = randomInt(0, 256);
    const y = 4 * randomInt(0, 64);
    return { host: `10.250.${x}.${y + 1}`, sliver: `10.250.${x}.${y + 2}` };
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'plt-instance-'));
    await chmod(work, 0o711); // slivers' roots are unprivileged host uids that must reach the lxcpath
    image = join(work, 'tiny.tar');
    const t0 = performance.now();
    await run('bash', [buildScript, image]);
    console.log(`tiny image built in ${Math.round(performance.now() - t0)} ms`);
    key = join(work, 'id_ed25519');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    driver = new LxcDriver({ lxcPath: join(work, 'lxc') });
    drivers.push(driver);
    await driver.check();
  });

  afterAll(async () => {
    for (const d of drivers) for (const id of await d.list().catch(() => [])) await d.destroy(id).catch((e: unknown) => console.error('cleanup', e));
    for (const undo of cleanups.reverse()) await undo().catch((e: unknown) => console.error('cleanup', e));
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('check() finds unprivileged slivers, freezing and memory limits on this host', () => {
    expect(driver.limitations).toEqual([]);
    expect(driver.capabilities).toEqual({ unprivileged: true, freeze: true, memoryLimit: true });
    expect(driver.hostFacts.seccompProfile).toBe(join(driver.lxcPath, SECCOMP_POLICY_FILE));
  });

  describe('one sliver through its life', () => {
    let spec: InstanceSpec;

    it('boots unprivileged: root inside, host uid H outside, files uid 0 on disk', async () => {
      spec = await sliver('princeton_tiny');
      await driver.define(spec);
      await driver.define(spec); // idempotent
      expect(await driver.state(spec.id)).toBe('stopped');
      expect((await driver.states()).get(spec.id)).toBe('stopped');
      const t0 = performance.now();
      await driver.start(spec.id);
      console.log(`lxc-start -d of a tiny sliver: ${Math.round(performance.now() - t0)} ms`);
      expect(await driver.state(spec.id)).toBe('running');
      expect((await driver.states()).get(spec.id)).toBe('running'); // from cgroupfs, no lxc-info
      await driver.start(spec.id); // already running: no-op

      expect((await driver.exec(spec.id, ['id', '-u'])).stdout).toBe('0');
      expect((await driver.exec(spec.id, ['hostname'])).stdout).toBe('princeton_tiny');
      expect((await driver.exec(spec.id, ['cat'], 'fed through stdin')).stdout).toBe('fed through stdin');
      const pid = await driver.initPid(spec.id);
      expect(pid).not.toBeNull();
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      expect(status).toMatch(new RegExp(`^Uid:\\t${idmapBase}\\t${idmapBase}\\t`, 'm'));
      expect(status).toMatch(new RegExp(`^Gid:\\t${idmapBase}\\t`, 'm'));
      // The host key the sliver made at first boot is uid 0 on disk: the rootfs is idmapped, not chowned.
      const hostKey = await until('first-boot host key', () => stat(join(spec.rootfs, 'etc/ssh/ssh_host_ed25519_key.pub')));
      expect(hostKey.uid).toBe(0);
      expect(await driver.list()).toContain(spec.id);
    });

    it('sees a read-only /proc/sys, has lost the dangerous capabilities and runs under seccomp', async () => {
      // domainname is per-UTS-namespace, so only the read-only mount stops the sliver's root.
      await expect(driver.exec(spec.id, ['sh', '-c', 'echo x > /proc/sys/kernel/domainname'])).rejects.toThrow(/Read-only file system/);
      await expect(driver.exec(spec.id, ['mknod', '/tmp/mem', 'c', '1', '1'])).rejects.toThrow(/Operation not permitted/);
      for (const pid of ['1', 'self']) {
        const status = (await driver.exec(spec.id, ['cat', `/proc/${pid}/status`])).stdout;
        const bounding = BigInt(`0x${/^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? 'x'}`);
        for (const [cap, bit] of Object.entries(DROPPED)) expect((bounding >> BigInt(bit)) & 1n, `${cap} in ${pid}'s bounding set`).toBe(0n);
        expect(status).toMatch(/^Seccomp:\s*2$/m); // filter mode: LXC's default profile is loaded
      }
    });

    it('has its memory, cpu and pids limits in its own cgroup, and cannot raise them', async () => {
      const cg = driver.hostFacts.cgroups;
      const limit = String(spec.memoryMb * 1024 * 1024);
      const file = cg.memory === 'v1' ? '/sys/fs/cgroup/memory/memory.limit_in_bytes' : '/sys/fs/cgroup/memory.max';
      expect((await driver.exec(spec.id, ['cat', file])).stdout).toBe(limit);
      await expect(driver.exec(spec.id, ['sh', '-c', `echo max > ${file}`])).rejects.toThrow(/Permission denied|Read-only/);
      if (cg.cpu === 'v1') expect((await driver.exec(spec.id, ['cat', '/sys/fs/cgroup/cpu/cpu.shares'])).stdout).toBe('512');
      const pidsMax = cg.pids === 'v1' ? '/sys/fs/cgroup/pids/pids.max' : '/sys/fs/cgroup/pids.max';
      expect((await driver.exec(spec.id, ['cat', pidsMax])).stdout).toBe('128');
      const resident = await driver.memoryBytes(spec.id);
      expect(resident).toBeGreaterThan(0);
      expect(resident).toBeLessThan(spec.memoryMb * 1024 * 1024);
      const usage = await run('lxc-cgroup', ['-P', driver.lxcPath, '-n', containerName(spec.id), cg.memory === 'v1' ? 'memory.usage_in_bytes' : 'memory.current']);
      console.log(`idle tiny sliver: resident ${resident} bytes, cgroup usage ${usage.stdout.trim()} bytes`);
      // Accounting: CPU time the sliver uses shows up in its cgroup.
      const cpu0 = await driver.cpuSeconds(spec.id);
      expect(cpu0).not.toBeNull();
      await driver.exec(spec.id, ['sh', '-c', 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done']);
      expect((await driver.cpuSeconds(spec.id))! - cpu0!).toBeGreaterThan(0.1);
    });

    it('freezes, thaws, stops, restarts and is destroyed without a trace', async () => {
      await driver.freeze(spec.id);
      expect(await driver.state(spec.id)).toBe('frozen');
      expect((await driver.states()).get(spec.id)).toBe('frozen');
      expect(await driver.memoryBytes(spec.id)).toBeGreaterThan(0);
      await driver.thaw(spec.id);
      expect(await driver.state(spec.id)).toBe('running');
      expect((await driver.exec(spec.id, ['true'])).stdout).toBe('');

      let t0 = performance.now();
      await driver.stop(spec.id, 10);
      console.log(`clean stop (busybox init on SIGPWR): ${Math.round(performance.now() - t0)} ms`);
      expect(await driver.state(spec.id)).toBe('stopped');
      expect((await driver.states()).get(spec.id)).toBe('stopped');
      expect(await driver.memoryBytes(spec.id)).toBeNull();
      await driver.stop(spec.id); // already stopped: no-op
      t0 = performance.now();
      await driver.start(spec.id); // the second boot keeps its host key
      console.log(`restart: ${Math.round(performance.now() - t0)} ms`);
      // Up (it runs a command) before it is frozen: a freeze during init's first steps once
      // stayed in FREEZING for a minute under the full suite's load.
      await driver.exec(spec.id, ['true']);
      await driver.freeze(spec.id);
      // The watchdog's kill: also of a frozen sliver, at once.
      await driver.kill(spec.id);
      expect(await driver.state(spec.id)).toBe('stopped');
      expect(await driver.cpuSeconds(spec.id)).toBeNull();
      await driver.kill(spec.id); // already stopped: no-op
      await driver.start(spec.id);
      await driver.exec(spec.id, ['true']);
      await driver.freeze(spec.id); // destroy must also cope with a frozen sliver

      await driver.destroy(spec.id);
      expect(await driver.state(spec.id)).toBe('absent');
      expect((await driver.states()).has(spec.id)).toBe(false);
      await expect(stat(join(driver.lxcPath, containerName(spec.id)))).rejects.toThrow(/ENOENT/);
      expect(await driver.list()).not.toContain(spec.id);
      expect((await run('lxc-ls', ['-P', driver.lxcPath])).stdout).not.toContain(spec.id);
      await driver.destroy(spec.id); // idempotent
      expect(await cgroupsOf(containerName(spec.id))).toEqual([]);

      // An LXC tool that loaded the config just before it went (lxc-ls, lxc-info) opens the log
      // the config names, and makes the directory again for it: no config, only the log. It is
      // a container the driver lists as absent, and destroys.
      const dir = join(driver.lxcPath, containerName(spec.id));
      await mkdir(dir);
      await writeFile(join(dir, 'lxc.log'), '');
      expect(await driver.list()).toContain(spec.id);
      expect((await driver.states()).get(spec.id)).toBe('absent');
      await driver.destroy(spec.id);
      await expect(stat(dir)).rejects.toThrow(/ENOENT/);
    });
  });

  it('destroys with LXC tools loading its config meanwhile, and what they make again is a container it lists as absent and removes', async () => {
    // lxc-ls (an admin's, a monitor's) opens the log every config names, and makes the log's
    // directory again if it has just gone: a container directory holding only that log.
    const spec = await sliver('racing_slice');
    const dir = join(driver.lxcPath, containerName(spec.id));
    const loops = [0, 1].map(() => spawn('sh', ['-c', `while :; do lxc-ls -P '${driver.lxcPath}' >/dev/null 2>&1; done`], { stdio: 'ignore', detached: true }));
    const left: string[][] = [];
    try {
      for (let i = 0; i < 40; i++) {
        await driver.define(spec);
        await driver.destroy(spec.id);
        await new Promise((r) => setTimeout(r, 30));
        const files = await readdir(dir).catch(() => null);
        if (!files) continue;
        left.push(files);
        expect(await driver.list()).toContain(spec.id);
        expect((await driver.states()).get(spec.id)).toBe('absent');
        await driver.destroy(spec.id);
        await expect(stat(dir)).rejects.toThrow(/ENOENT/);
      }
    } finally {
      for (const l of loops) process.kill(-l.pid!, 'SIGKILL');
    }
    console.log(`destroyed 40 times beside lxc-ls: made again ${left.length} times`);
    for (const files of left) expect(files).toEqual(['lxc.log']);
    await driver.destroy(spec.id);
    await expect(stat(dir)).rejects.toThrow(/ENOENT/);
  });

  it('refuses what it cannot do and says why a start failed', async () => {
    const spec = await sliver('broken_slice', { net: { link: 'plt-no-such', address: '10.250.0.2/30', gateway: '10.250.0.1' } });
    await expect(driver.define({ ...spec, idmapBase: null })).rejects.toThrow(/privileged/);
    await expect(driver.define({ ...spec, rootfs: join(work, 'missing') })).rejects.toThrow(/not a directory/);
    await expect(driver.start(randomUUID())).rejects.toThrow(/not defined/);
    await driver.define(spec);
    await expect(driver.start(spec.id)).rejects.toThrow(/failed to start[\s\S]*ERROR/);
    expect(await driver.state(spec.id)).toBe('stopped');
    await driver.destroy(spec.id);
    expect(await driver.list()).not.toContain(spec.id);

    // An lxcpath the sliver's root cannot reach: check() refuses it; if it changes later, LXC
    // fails late and leaves its monitor cgroups behind, which destroy() must clear.
    const closedDir = join(work, 'closed');
    const closedDriver = new LxcDriver({ lxcPath: join(closedDir, 'lxc') });
    drivers.push(closedDriver);
    await mkdir(closedDir, { mode: 0o700 });
    await expect(closedDriver.check()).rejects.toThrow(/closed is not searchable by others \(chmod o\+x/);
    await chmod(closedDir, 0o755);
    await closedDriver.check();
    const closed = await sliver('closed_slice');
    await closedDriver.define(closed);
    await chmod(closedDir, 0o700);
    await expect(closedDriver.start(closed.id)).rejects.toThrow(/Could not access/);
    await closedDriver.destroy(closed.id);
    expect(await cgroupsOf(containerName(closed.id))).toEqual([]);
    expect(await closedDriver.list()).not.toContain(closed.id);
  });

  it('moves a veth in as eth0, and sshd answers on the sliver address', async () => {
    const tag = randomInt(0, 0xffff).toString(16);
    const [hostIf, peerIf] = [`pi${tag}h`, `pi${tag}c`];
    const addr = subnet();
    await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', peerIf]);
    cleanups.push(() => run('ip', ['link', 'del', hostIf]));
    await run('ip', ['addr', 'add', `${addr.host}/30`, 'dev', hostIf]);
    await run('ip', ['link', 'set', hostIf, 'up']);

    const spec = await sliver('tiny_ssh', { net: { link: peerIf, address: `${addr.sliver}/30`, gateway: addr.host } });
    await driver.define(spec);
    const t0 = performance.now();
    await driver.start(spec.id);
    const started = performance.now();
    const banner = await until('an ssh banner', () => sshBanner(addr.sliver));
    console.log(`start ${Math.round(started - t0)} ms, ssh banner ${Math.round(performance.now() - t0)} ms after start (first boot, host key made)`);
    expect(banner).toMatch(/^SSH-2\.0-OpenSSH/);
    expect((await driver.exec(spec.id, ['ip', '-4', '-o', 'addr', 'show', 'eth0'])).stdout).toContain(`${addr.sliver}/30`);
    const ssh = await run('ssh', [...SSH_OPTS, '-i', key, '-p', '22', `root@${addr.sliver}`, 'cat /etc/slicename']);
    expect(ssh.stdout).toBe('tiny_ssh');
    // The veth belongs to the network driver: destroy hands it back to the host, unaddressed.
    expect(await tryRun('ip', ['link', 'show', peerIf])).toBeNull();
    await driver.destroy(spec.id);
    const back = await until('the veth back on the host', () => tryRun('ip', ['-o', 'addr', 'show', 'dev', peerIf]));
    expect(back.stdout).not.toContain(addr.sliver);
  });

  it('runs every lxc command inside a node namespace when netns is set (multi-node testbeds)', async () => {
    const ns = `plt-inst-${randomInt(0, 0xffffff).toString(16)}`;
    await run('ip', ['netns', 'add', ns]);
    cleanups.push(() => run('ip', ['netns', 'del', ns])); // also removes the veth pair inside
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const addr = subnet();
    await run('ip', ['-n', ns, 'link', 'add', 'slv0h', 'type', 'veth', 'peer', 'name', 'slv0c']);
    await run('ip', ['-n', ns, 'addr', 'add', `${addr.host}/30`, 'dev', 'slv0h']);
    await run('ip', ['-n', ns, 'link', 'set', 'slv0h', 'up']);

    const node = new LxcDriver({ lxcPath: join(work, 'lxc-node'), netns: ns });
    drivers.push(node);
    await node.check();
    // The interface exists only in the node namespace, so this start works only from inside it.
    const spec = await sliver('node_slice', { net: { link: 'slv0c', address: `${addr.sliver}/30`, gateway: addr.host } });
    await node.define(spec);
    await node.start(spec.id);
    expect(await node.state(spec.id)).toBe('running');
    expect(await driver.list()).not.toContain(spec.id);
    const ssh = await until('ssh into the sliver from the node namespace', () =>
      tryRun('ip', ['netns', 'exec', ns, 'ssh', ...SSH_OPTS, '-i', key, `root@${addr.sliver}`, 'cat /etc/slicename; id -u']),
    );
    expect(ssh.stdout).toBe('node_slice\n0');
    await node.destroy(spec.id);
    expect(await node.state(spec.id)).toBe('absent');
    expect((await run('ip', ['-n', ns, '-o', 'link', 'show', 'slv0c'])).stdout).toContain('slv0c');
  });

  it('keeps a sliver on btrfs from making or removing subvolumes and snapshots (each would escape its quota)', async () => {
    const pool = await btrfsPool();
    const slivers = join(pool, 'slivers');
    await mkdir(slivers);
    const node = new LxcDriver({ lxcPath: join(work, 'lxc-btrfs'), rootfsDir: slivers });
    drivers.push(node);
    await node.check();
    expect(node.capabilities.unprivileged).toBe(true); // idmapped mounts work on btrfs

    // The policy: written once, and LXC's own default rules are all in it.
    const policyPath = join(node.lxcPath, SECCOMP_POLICY_FILE);
    expect(node.hostFacts.seccompProfile).toBe(policyPath);
    expect(await readFile(policyPath, 'utf8')).toBe(renderSeccompPolicy());
    const written = (await stat(policyPath)).mtimeMs;
    await node.check();
    expect((await stat(policyPath)).mtimeMs).toBe(written);
    const lxcDefault = await readFile('/usr/share/lxc/config/common.seccomp', 'utf8').catch(() => '');
    const ours = renderSeccompPolicy().split('\n');
    for (const line of lxcDefault.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean)) expect(ours, line).toContain(line);

    // As the storage driver makes it, the rootfs is a subvolume of its own; two more inside it
    // for the sliver to try to remove.
    const rootfs = join(slivers, 'root');
    await run('btrfs', ['subvolume', 'create', rootfs]);
    const spec = await sliver('btrfs_slice', { rootfs });
    const libs = (await run('ldd', ['/usr/bin/perl'])).stdout.match(/\/\S+\.so\S*/g) ?? [];
    await run('cp', ['-L', '--parents', '-t', rootfs, '/usr/bin/perl', ...libs]);
    const helper = join(rootfs, 'usr/bin/btrfs-ioctl');
    await writeFile(helper, BTRFS_IOCTL, { mode: 0o755 });
    await mkdir(join(rootfs, 'srv'));
    for (const name of ['d1', 'd2']) await run('btrfs', ['subvolume', 'create', join(rootfs, 'srv', name)]);

    // Control: root of a user namespace on the host, without the filter, makes and removes all of
    // them with this same helper on this filesystem. The kernel would let the sliver do it too.
    const control = join(pool, 'control');
    await mkdir(control);
    const asUserns = (...args: string[]) => run('unshare', ['--user', '--map-root-user', 'perl', helper, ...args]);
    for (const args of [['subvol', control, 'c1'], ['subvol2', control, 'c2'], ['snap', control, 'c3', rootfs], ['snap2', control, 'c4', rootfs], ['subvol+hi', control, 'c5']])
      expect((await asUserns(...args)).stdout, args.join(' ')).toBe('ok');
    for (const args of [['destroy', control, 'c1'], ['destroy2', control, 'c2']]) expect((await asUserns(...args)).stdout, args.join(' ')).toBe('ok');
    const before = await subvolumes(pool);
    expect(before).toEqual(['control/c3', 'control/c4', 'control/c5', 'slivers/root', 'slivers/root/srv/d1', 'slivers/root/srv/d2']);

    await node.define(spec);
    await node.start(spec.id);
    expect((await node.exec(spec.id, ['id', '-u'])).stdout).toBe('0');
    const attempts = [
      ['subvol', '/srv', 'v1'],
      ['subvol2', '/srv', 'v2'],
      ['snap', '/srv', 's1', '/'], // its own root: another quota's worth
      ['snap2', '/srv', 's2', '/'],
      ['subvol+hi', '/srv', 'v3'],
      ['snap2+hi', '/srv', 's3', '/'],
      ['destroy', '/srv', 'd1'],
      ['destroy2', '/srv', 'd2'],
      ['destroy+hi', '/srv', 'd1'],
    ];
    for (const args of attempts) {
      const err = await node.exec(spec.id, ['btrfs-ioctl', ...args]).then(() => null, (e: unknown) => e);
      expect(err instanceof Error ? err.message : 'succeeded', args.join(' ')).toMatch(/Operation not permitted/);
    }
    expect(await subvolumes(pool)).toEqual(before);
    // Other btrfs ioctls and ordinary writes still work.
    expect((await node.exec(spec.id, ['btrfs-ioctl', 'getflags', '/'])).stdout).toBe('0');
    await node.exec(spec.id, ['sh', '-c', 'echo written > /srv/file && dd if=/dev/zero of=/srv/d1/zeros bs=1M count=4 conv=fsync 2>/dev/null']);
    expect(await readFile(join(rootfs, 'srv/file'), 'utf8')).toBe('written\n');
    expect((await stat(join(rootfs, 'srv/d1/zeros'))).size).toBe(4 * 2 ** 20);
    expect((await stat(join(rootfs, 'srv/file'))).uid).toBe(0);

    await node.destroy(spec.id);
    expect(await node.state(spec.id)).toBe('absent');
  });
});
