// The qemu driver: its argv, config checks and control-port protocol as pure functions, then real
// VMs on this host under TCG: the tiny image booted over 9p in a network namespace the test makes,
// reached over ssh, exec'd into, frozen, stopped, restarted, killed and destroyed without a trace.
import { randomInt, randomUUID } from 'node:crypto';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandError, run, tryRun } from '@planetlite/host';
import { cgroupOf, containment } from '../../../test/harness/cgroup.ts';
import {
  InvalidSpecError,
  JAIL_TAP_FD,
  QemuDriver,
  VM_MEMORY_OVERHEAD_MB,
  JAIL_SCRIPT,
  ioWeights,
  jailArgv,
  validateJailSpec,
  vmLimits,
  type JailSpec,
  execRequest,
  kernelCommandLine,
  newcArchive,
  parseExecResult,
  renderQemuArgv,
  resolveInRoot,
  validateVmConfig,
  vcpusFor,
  vmConfigFromSpec,
  vmPaths,
  type BootAssets,
  type InstanceSpec,
  type VmConfig,
} from './index.js';

const ID = '0b7e6c1e-3f4a-4c55-9a0e-2d1f7c9b8a01';
const boot: BootAssets = { source: 'node', release: '6.1.0-56-amd64', kernel: '/var/cache/planetlite-kvm/k/vmlinux', initrd: '/var/cache/planetlite-kvm/k/initrd.img' };
const spec: InstanceSpec = {
  id: ID,
  hostname: 'princeton_codeen',
  rootfs: '/pool/slivers/0b7e6c1e',
  memoryMb: 256,
  cpuShares: 512,
  pids: 200,
  idmapBase: 65536 * 20,
  net: { link: 'pl0b7e6c1et', address: '10.95.0.2/30', gateway: '10.95.0.1' },
};

/** The sliver's cgroup directories still there, in any hierarchy. */
async function cgroupLeft(id: string): Promise<string[]> {
  const out: string[] = [];
  for (const h of await readdir('/sys/fs/cgroup')) {
    const dir = join('/sys/fs/cgroup', h, `lxc.payload.sl-${id}`);
    if (await stat(dir).then(() => true, () => false)) out.push(dir);
  }
  return out;
}

/** The value after each occurrence of an option. */
function values(argv: string[], option: string): string[] {
  return argv.flatMap((a, i) => (a === option ? [argv[i + 1] ?? ''] : []));
}

describe('qemu VM config and argv', () => {
  const config = vmConfigFromSpec(spec, boot, 2);
  const paths = vmPaths('/var/lib/planetlite/vm', ID);

  it('renders a 9p root, the tap, both serial ports, QMP and the sandbox', () => {
    const argv = renderQemuArgv(config, paths, 'tcg');
    expect(values(argv, '-m')).toEqual(['256']);
    expect(values(argv, '-smp')).toEqual(['1']);
    expect(values(argv, '-accel')).toEqual(['tcg,thread=multi,tb-size=32']);
    expect(values(argv, '-uuid')).toEqual([ID]);
    expect(values(argv, '-kernel')).toEqual([boot.kernel]);
    expect(values(argv, '-initrd')).toEqual([boot.initrd]);
    expect(values(argv, '-fsdev')).toEqual(['local,id=rootfs,path=/pool/slivers/0b7e6c1e,security_model=passthrough,multidevs=remap']);
    expect(values(argv, '-netdev')).toEqual([`tap,id=n0,fd=${JAIL_TAP_FD}`]); // opened by the jail helper
    expect(values(argv, '-device')).toContain(`virtio-net-pci,netdev=n0,mac=${config.net?.mac},romfile=`);
    expect(values(argv, '-serial')).toEqual(['chardev:console', 'chardev:control']);
    expect(values(argv, '-chardev')).toEqual([
      `file,id=console,path=/var/lib/planetlite/vm/${ID}/console.log,append=on`,
      `socket,id=control,path=/var/lib/planetlite/vm/${ID}/run/control.sock,server=on,wait=off`,
      `socket,id=qmp,path=/var/lib/planetlite/vm/${ID}/run/qmp.sock,server=on,wait=off`,
    ]);
    expect(values(argv, '-pidfile')).toEqual([`/var/lib/planetlite/vm/${ID}/qemu.pid`]);
    expect(values(argv, '-sandbox')[0]).toMatch(/^on,.*spawn=deny/);
    expect(argv).not.toContain('-daemonize');
    expect(values(renderQemuArgv(config, paths, 'kvm'), '-accel')).toEqual(['kvm']);
  });

  it('wraps qemu in the jail helper: the sliver\'s ids, its cgroups, the tap as fd 3, only what it needs', () => {
    const jail: JailSpec = {
      idmapBase: config.idmapBase,
      rootfs: config.rootfs,
      jail: paths.jail,
      binds: [['/usr', 'ro'], [boot.kernel, 'ro'], [paths.run, 'rw'], ['/dev/null', 'dev']],
      cgroups: [`/sys/fs/cgroup/memory/lxc.payload.sl-${ID}`],
      tap: 'pl0b7e6c1et',
      extraGid: null,
      cwd: paths.run,
    };
    const argv = jailArgv(jail, ['/usr/bin/qemu-system-x86_64', '-name', 'x']);
    expect(argv.slice(0, 4)).toEqual(['/usr/bin/python3', '-I', '-S', '-c']);
    expect(argv[4]).toBe(JAIL_SCRIPT);
    expect(JSON.parse(argv[5]!)).toEqual({ ...jail, keep: [0, 1, 2, 3, 4, 31], tapFd: 3, extraNsGid: 65536 });
    expect(argv.slice(6)).toEqual(['/usr/bin/qemu-system-x86_64', '-name', 'x']);
    // What the helper does, in order: cgroups and tap as root, then the namespaces, then no_new_privs and exec.
    const order = ['cgroup.procs', 'TUNSETOWNER', 'unshare mount namespace', 'unshare user namespace', 'mount_setattr idmap', 'pivot_root', 'setresuid', 'no_new_privs', 'os.execv'];
    expect(order.map((k) => JAIL_SCRIPT.indexOf(k)).every((at, i, all) => at >= 0 && (i === 0 || at > all[i - 1]! || ['mount_setattr idmap', 'pivot_root'].includes(order[i]!)))).toBe(true);
    const bad = (patch: Partial<JailSpec>) => () => validateJailSpec({ ...jail, ...patch });
    expect(bad({ idmapBase: 0 })).toThrow(/idmapBase/);
    expect(bad({ binds: [['/usr/../etc', 'ro']] })).toThrow(/without '\.\.'/);
    expect(bad({ binds: [['/', 'ro']] })).toThrow(/absolute/);
    expect(bad({ binds: [['/usr', 'ro'], ['/usr/lib', 'ro']] })).toThrow(/inside/);
    expect(bad({ jail: config.rootfs })).toThrow(/overlaps/);
    expect(bad({ tap: 'a;b' })).toThrow(/tap/);
  });

  it('limits a VM as a container: memory (plus qemu\'s overhead), cpu weight and cap, pids, I/O weight', () => {
    const v1 = { mode: 'hybrid', memory: 'v1', cpu: 'v1', pids: 'v1', freezer: 'v1', devices: 'v1' } as const;
    const limits = vmLimits({ memoryMb: 256, cpuShares: 512, cpuCapPercent: 150, pids: 200 }, v1);
    expect(limits).toEqual([
      { file: 'memory.limit_in_bytes', value: String((256 + VM_MEMORY_OVERHEAD_MB) * 2 ** 20) },
      { file: 'cpu.shares', value: '512' },
      { file: 'cpu.cfs_period_us', value: '100000' },
      { file: 'cpu.cfs_quota_us', value: '150000' },
      { file: 'pids.max', value: '200' },
      ...ioWeights(512),
    ]);
    expect(ioWeights(1024).map((w) => w.value)).toEqual(['100', '500', '100', 'default 100']);
    expect(ioWeights(2).map((w) => w.value)).toEqual(['1', '10', '1', 'default 1']);
    const v2 = { mode: 'unified', memory: 'v2', cpu: 'v2', pids: 'v2', freezer: 'v2', devices: 'v2' } as const;
    expect(vmLimits({ memoryMb: 128, cpuShares: 1024, cpuCapPercent: null }, v2).slice(0, 3)).toEqual([
      { file: 'memory.max', value: String((128 + VM_MEMORY_OVERHEAD_MB) * 2 ** 20) },
      { file: 'cpu.weight', value: '39' },
      { file: 'cpu.max', value: 'max 100000' },
    ]);
  });

  it('puts the address on the kernel command line for the initramfs, and no network without one', () => {
    expect(kernelCommandLine(config)).toContain('ip=10.95.0.2::10.95.0.1:255.255.255.252:princeton_codeen:eth0:off');
    expect(kernelCommandLine(config)).toMatch(/^console=ttyS0 rw root=root rootfstype=9p rootflags=trans=virtio,/);
    const offline = vmConfigFromSpec({ ...spec, net: null }, boot, 2);
    expect(kernelCommandLine(offline)).not.toContain('ip=');
    const argv = renderQemuArgv(offline, paths, 'tcg');
    expect(values(argv, '-netdev')).toEqual([]);
  });

  it('escapes commas inside qemu option values', () => {
    const odd = vmConfigFromSpec({ ...spec, rootfs: '/pool/a,b' }, boot, 2);
    expect(values(renderQemuArgv(odd, paths, 'tcg'), '-fsdev')[0]).toContain('path=/pool/a,,b,');
  });

  it('gives one vCPU per started 100 % of cap, within the host', () => {
    expect(vcpusFor({ cpuCapPercent: null }, 8)).toBe(1);
    expect(vcpusFor({ cpuCapPercent: 50 }, 8)).toBe(1);
    expect(vcpusFor({ cpuCapPercent: 250 }, 8)).toBe(3);
    expect(vcpusFor({ cpuCapPercent: 1600 }, 2)).toBe(2);
  });

  it('refuses specs a VM cannot take, naming the field', () => {
    expect(() => vmConfigFromSpec({ ...spec, memoryMb: 64 }, boot, 2)).toThrow(/memoryMb is 64, but a VM sliver needs at least 128/);
    expect(() => vmConfigFromSpec({ ...spec, idmapBase: null }, boot, 2)).toThrow(/idmapBase must be a host id range/);
    expect(() => vmConfigFromSpec({ ...spec, idmapBase: 12 }, boot, 2)).toThrow(InvalidSpecError);
    expect(() => vmConfigFromSpec({ ...spec, net: { link: 'tap;rm', address: '10.95.0.2/30', gateway: '10.95.0.1' } }, boot, 2)).toThrow(/net\.link/);
    expect(() => vmConfigFromSpec({ ...spec, imageRoot: 'relative' }, boot, 2)).toThrow(/imageRoot/);
  });

  it('refuses a damaged config read back from disk, naming the field', () => {
    const bad = (patch: Record<string, unknown>) => () => validateVmConfig({ ...config, ...patch });
    expect(bad({})).not.toThrow();
    expect(bad({ version: 2 })).toThrow(/vm config version must be 1, got 2 \(redefine the sliver\)/);
    expect(bad({ vcpus: 0 })).toThrow(/vm config vcpus/);
    expect(bad({ hostname: 'a b' })).toThrow(/vm config hostname/);
    expect(bad({ net: { ...config.net, mac: '00:11:22:33:44:55' } })).toThrow(/net\.mac/);
    expect(bad({ net: { ...config.net, address: '10.95.0.300' } })).toThrow(/net\.address/);
    expect(bad({ boot: { ...boot, kernel: 'vmlinux' } })).toThrow(/boot\.kernel must be an absolute path/);
    expect(bad({ boot: { ...boot, release: '6.1 $(x)' } })).toThrow(/boot\.release/);
    expect(bad({ idmapBase: undefined })).toThrow(/idmapBase .*define the sliver again/); // a config from before the jail
    expect(bad({ limits: { ...config.limits, pids: 1 } })).toThrow(/limits\.pids/);
    expect(() => validateVmConfig(null)).toThrow(/must be an object/);
    expect(() => vmPaths('/v', '../etc')).toThrow(/uuid/);
  });

  it('encodes exec requests so any argument survives, and reads only its own result', () => {
    const line = execRequest('n1', ['sh', '-c', 'echo "$1"', '', 'a b\n'], '');
    expect(line).toBe(`exec n1 _ ${['sh', '-c', 'echo "$1"', '', 'a b\n'].map((a) => `_${Buffer.from(a).toString('base64')}`).join(' ')}`);
    expect(line).not.toMatch(/\n/);
    const out = `_${Buffer.from('hi\n').toString('base64')}`;
    expect(parseExecResult(`result n1 0 ${out} _`, 'n1')).toEqual({ code: 0, stdout: 'hi\n', stderr: '' });
    expect(parseExecResult(`result n2 0 ${out} _`, 'n1')).toBeNull();
    expect(parseExecResult('pong n1', 'n1')).toBeNull();
  });

  it('writes a newc archive the kernel can unpack', async () => {
    const archive = newcArchive([{ name: 'init', mode: 0o100755, data: Buffer.from('#!/bin/sh\n') }, { name: 'dev/console', mode: 0o020600, rdev: [5, 1] }]);
    expect(archive.length % 4).toBe(0);
    const dir = await mkdtemp(join(tmpdir(), 'plt-newc-'));
    try {
      await writeFile(join(dir, 'a.cpio'), archive);
      const { stdout } = await run('cpio', ['-t', '-v', '-F', join(dir, 'a.cpio')]).catch(() => run('busybox', ['cpio', '-t', '-v', '-F', join(dir, 'a.cpio')]));
      expect(stdout).toMatch(/-rwxr-xr-x .* init/);
      expect(stdout).toMatch(/crw------- .* dev\/console/);
      // ino … devminor (9 fields), then rdevmajor 5, rdevminor 1: /dev/console.
      expect(archive.toString('latin1')).toMatch(/070701(?:[0-9a-f]{8}){9}0000000500000001[0-9a-f]{16}dev\/console\0/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('resolves an image path inside the image root, never outside it', async () => {
    const root = await mkdtemp(join(tmpdir(), 'plt-root-'));
    try {
      await mkdir(join(root, 'usr/lib/modules/6.1'), { recursive: true });
      await run('ln', ['-s', 'usr/lib', join(root, 'lib')]);
      await run('ln', ['-s', '/etc/shadow', join(root, 'vmlinuz')]);
      await run('ln', ['-s', '../../../../../../etc', join(root, 'up')]);
      expect(await resolveInRoot(root, 'lib/modules/6.1')).toBe(join(root, 'usr/lib/modules/6.1'));
      expect(await resolveInRoot(root, 'vmlinuz')).toBeNull(); // the image's /etc/shadow: absent
      await mkdir(join(root, 'etc'));
      expect(await resolveInRoot(root, 'up')).toBe(join(root, 'etc'));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

const buildScript = fileURLToPath(new URL('../../../infra/images/tiny/build.sh', import.meta.url));
const isRoot = process.getuid?.() === 0;
const hasQemu = (await tryRun('qemu-system-x86_64', ['--version'])) !== null;
const SSH_OPTS = ['-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR'];
/** TCG boots take 5–7 s on an idle machine; other work shares its 2 cores. */
const BOOT_TIMEOUT_MS = 120_000;

/** Whether a process runs (a zombie waiting for its parent to reap it does not). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return stat !== '' && !/^\d+ \(.*\) [ZX]/.test(stat);
}

async function until<T>(what: string, fn: () => Promise<T | null | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(!isRoot || !hasQemu)('qemu driver on this host (needs root and qemu-system-x86)', { timeout: 600_000 }, () => {
  let work = '';
  let image = '';
  let driver: QemuDriver;
  const ns = `pl-kvmt-${randomInt(0, 0xffffff).toString(16)}`;
  const tap = `plkt${randomInt(0, 0xffff).toString(16)}`;
  const third = randomInt(0, 256);
  const base = 4 * randomInt(0, 64);
  const hostIp = `10.95.${third}.${base + 1}`;
  const guestIp = `10.95.${third}.${base + 2}`;
  const keys = { disk: '', exec: '' };
  const netns = ['nsenter', `--net=/run/netns/${ns}`, '--'];
  /** Host changes the tests make themselves, undone newest first even when a test fails. */
  const cleanups: Array<() => Promise<unknown>> = [];

  /** The first line sshd sends on the guest's :22, read from the test's namespace, or null. */
  async function banner(timeoutS = 8): Promise<string | null> {
    const script = 'exec 3<>"/dev/tcp/$0/22" && read -r -t "$1" line <&3 && echo "$line"';
    const r = await tryRun(netns[0]!, [...netns.slice(1), 'timeout', String(timeoutS + 1), 'bash', '-c', script, guestIp, String(timeoutS)]);
    return r?.stdout.trim() || null;
  }

  function ssh(key: string, command: string): Promise<{ stdout: string }> {
    return run(netns[0]!, [...netns.slice(1), 'ssh', ...SSH_OPTS, '-i', key, `root@${guestIp}`, command], { timeoutMs: 60_000 });
  }

  /** A fresh sliver root from the tiny image, with the slice's name and the first test key for root. */
  async function sliver(slice: string, patch: Partial<InstanceSpec> = {}): Promise<InstanceSpec> {
    const id = randomUUID();
    const rootfs = join(work, 'slivers', id);
    await mkdir(rootfs, { recursive: true });
    await run('tar', ['-xf', image, '-C', rootfs]);
    await writeFile(join(rootfs, 'etc/slicename'), `${slice}\n`);
    await writeFile(join(rootfs, 'etc/hostname'), `${slice}\n`);
    await writeFile(join(rootfs, 'root/.ssh/authorized_keys'), await readFile(`${keys.disk}.pub`), { mode: 0o600 });
    return { id, hostname: slice, rootfs, memoryMb: 256, cpuShares: 1024, cpuCapPercent: 90, pids: 512, idmapBase: 3_000_000_000 + randomInt(0, 1000) * 65536, net: { link: tap, address: `${guestIp}/30`, gateway: hostIp }, ...patch };
  }

  /** Every qemu process whose command line names this test's directory. */
  async function strayQemus(): Promise<string[]> {
    const r = await tryRun('pgrep', ['-a', '-f', `qemu-system-x86_64 .*${work}`]);
    return r?.stdout.split('\n').filter(Boolean) ?? [];
  }

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'plt-qemu-'));
    cleanups.push(() => rm(work, { recursive: true, force: true }));
    // Last resort before the directory goes: no qemu of this test may outlive it.
    cleanups.push(async () => {
      for (const line of await strayQemus()) await tryRun('kill', ['-KILL', line.split(' ')[0] ?? '']);
    });
    image = join(work, 'tiny.tar');
    await run('bash', [buildScript, image]);
    for (const k of ['disk', 'exec'] as const) {
      keys[k] = join(work, `id_${k}`);
      await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `qemu-test-${k}`, '-f', keys[k]]);
    }
    // The node's namespace, with the tap the network driver would make (kind 'tap', host end .1).
    await run('ip', ['netns', 'add', ns]);
    cleanups.push(() => run('ip', ['netns', 'del', ns])); // the tap goes with it
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await run('ip', ['-n', ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    await run('ip', ['-n', ns, 'addr', 'add', `${hostIp}/30`, 'dev', tap]);
    await run('ip', ['-n', ns, 'link', 'set', tap, 'up']);

    driver = new QemuDriver({ vmPath: join(work, 'vm'), netns: ns });
    cleanups.push(async () => {
      for (const id of await driver.list()) await driver.destroy(id).catch((e: unknown) => console.error('cleanup', e));
    });
    const t0 = performance.now();
    await driver.check();
    console.log(`check() (kernel from the cache, initramfs, accel probe): ${Math.round(performance.now() - t0)} ms, accel ${driver.accel}`);
  }, 600_000);

  afterAll(async () => {
    for (const undo of cleanups.reverse()) await undo().catch((e: unknown) => console.error('cleanup', e));
  });

  it('check() finds a kernel and an accelerator that boots it', async () => {
    expect(['kvm', 'tcg']).toContain(driver.accel);
    const hasKvm = await stat('/dev/kvm').then(() => true, () => false);
    if (!hasKvm) expect(driver.accel).toBe('tcg');
    expect(driver.nodeBoot.source).toBe('node');
    expect((await readFile(driver.nodeBoot.kernel)).subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46])); // ELF: booted through PVH
    const initrd = gunzipSync(await readFile(driver.nodeBoot.initrd)).toString('latin1');
    expect(initrd).toContain('lib/modules/9p.ko');
    expect(driver.capabilities).toEqual({ unprivileged: true, freeze: true, memoryLimit: true });
  });

  describe('one VM sliver through its life', () => {
    let s: InstanceSpec;

    it('boots the tiny image over 9p and answers ssh on its address, under another kernel', async () => {
      s = await sliver('princeton_vm');
      await driver.define(s);
      const config = JSON.parse(await readFile(join(driver.vmPath, s.id, 'config.json'), 'utf8')) as VmConfig;
      await driver.define(s); // idempotent
      expect(config.boot.source).toBe('node'); // tiny ships no kernel
      expect(await driver.state(s.id)).toBe('stopped');
      expect((await driver.states()).get(s.id)).toBe('stopped');
      expect(await driver.list()).toContain(s.id);

      const t0 = performance.now();
      await driver.start(s.id);
      const started = performance.now() - t0;
      expect(await driver.state(s.id)).toBe('running');
      await driver.start(s.id); // already running: no-op
      const line = await until('the ssh banner', () => banner(), BOOT_TIMEOUT_MS);
      console.log(`start() returned after ${Math.round(started)} ms; ssh banner ${Math.round(performance.now() - t0)} ms after start`);
      expect(line).toMatch(/^SSH-2\.0-OpenSSH/);

      const inside = await ssh(keys.disk, 'uname -r; cat /etc/slicename; hostname');
      expect(inside.stdout.split('\n')).toEqual([driver.nodeBoot.release, 'princeton_vm', 'princeton_vm']);
      expect(driver.nodeBoot.release).not.toBe(release());
      expect(await readFile(driver.consoleLog(s.id), 'utf8')).toMatch(/Server listening on 0\.0\.0\.0 port 22/); // sshd -e
    });

    it('runs qemu as the sliver\'s own uid, sandboxed, in its own mount namespace and cgroups', async () => {
      const pid = (await driver.qemuPid(s.id))!;
      const c = containment(pid);
      expect(c.uid).toBe(s.idmapBase);
      expect(c.gid).toBe(s.idmapBase);
      expect(c.noNewPrivs).toBe('1');
      expect(c.seccomp).toBe('2');
      expect(c.capBnd).toBe(0x8000001fn); // CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, SETFCAP
      expect(c.ownMountNs).toBe(true);
      expect(c.ownUserNs).toBe(true);
      // Its mount namespace holds the sliver root, its own files, /usr and little else.
      const mounts = c.mounts;
      expect(mounts).toContain(s.rootfs);
      expect(mounts).toContain('/usr');
      expect(mounts.filter((m) => m.startsWith(work) && m !== s.rootfs && !m.startsWith(join(driver.vmPath, s.id)))).toEqual([]);
      // A /proc of its own process only (9p changes modes through /proc/self/fd), no /sys.
      expect(c.mountinfo.find((l) => l.split(' ')[4] === '/proc')).toMatch(/ - proc proc .*subset=pid.*hidepid=invisible|hidepid=invisible.*subset=pid/);
      expect(mounts.filter((m) => m.startsWith('/proc/') || m.startsWith('/sys'))).toEqual([]);
      expect(mounts).not.toContain('/sys/fs/cgroup/memory');
      // In the sliver's cgroups with its limits: memory is guest RAM plus qemu's overhead.
      for (const [controller, file, value] of [
        ['memory', 'memory.limit_in_bytes', String((s.memoryMb + VM_MEMORY_OVERHEAD_MB) * 2 ** 20)],
        ['cpu', 'cpu.shares', '1024'],
        ['cpu', 'cpu.cfs_quota_us', '90000'],
        ['pids', 'pids.max', '512'],
      ] as const) {
        const dir = cgroupOf(c.cgroups, controller);
        expect(dir).toBe(`/lxc.payload.sl-${s.id}`);
        expect((await readFile(`/sys/fs/cgroup/${controller}${dir}/${file}`, 'utf8')).trim()).toBe(value);
      }
      // The tap is the VM's: only its uid may attach to it.
      expect((await run('ip', ['-n', ns, '-d', 'link', 'show', tap])).stdout).toMatch(new RegExp(`user ${s.idmapBase} group ${s.idmapBase}`));
      // Guest root owns its files through the idmapped mount; on disk they stay uid 0.
      expect((await ssh(keys.disk, 'touch /root/made-in-guest; stat -c %u /root/made-in-guest /etc/slicename')).stdout).toBe('0\n0');
      expect((await stat(join(s.rootfs, 'root/made-in-guest'))).uid).toBe(0);
    });

    it('execs inside the guest as its root, and installs keys the way the agent does', async () => {
      expect((await driver.exec(s.id, ['id', '-u'])).stdout).toBe('0');
      expect((await driver.exec(s.id, ['cat'], 'fed through stdin\n')).stdout).toBe('fed through stdin');
      expect((await driver.exec(s.id, ['printf', '%s|', 'a b', '', '$(x)'])).stdout).toBe('a b||$(x)|');
      // Inside the image's namespaces: its init is PID 1 there, its root is /.
      expect((await driver.exec(s.id, ['sh', '-c', 'cat /proc/1/comm; cat /etc/slicename'])).stdout).toBe('init\nprinceton_vm');
      const err = await driver.exec(s.id, ['sh', '-c', 'echo broken >&2; exit 3']).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CommandError);
      expect((err as CommandError).exitCode).toBe(3);
      expect((err as CommandError).stderr).toBe('broken');
      // As reconcile.ts's keysScript: authorized_keys written from inside the sliver.
      const key = await readFile(`${keys.exec}.pub`, 'utf8');
      await driver.exec(s.id, ['sh', '-c', 'umask 077; cat > /root/.ssh/authorized_keys.new && mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys'], key);
      expect((await ssh(keys.exec, 'echo via-exec-key')).stdout).toBe('via-exec-key');
      await expect(ssh(keys.disk, 'true')).rejects.toThrow(/Permission denied/);
    });

    it('accounts memory and CPU from the sliver\'s cgroup', async () => {
      const bytes = await driver.memoryBytes(s.id);
      const cpu = await driver.cpuSeconds(s.id);
      console.log(`idle VM: memoryBytes ${((bytes ?? 0) / 2 ** 20).toFixed(1)} MiB (its memory cgroup: anon + mapped), cpuSeconds ${cpu}`);
      expect(bytes).toBeGreaterThan(32 * 2 ** 20);
      expect(bytes).toBeLessThan((s.memoryMb + 256) * 2 ** 20);
      expect(cpu).toBeGreaterThan(0.5); // a TCG boot costs seconds of CPU
    });

    it('freezes and thaws through QMP; a frozen guest does not answer', async () => {
      await driver.freeze(s.id);
      expect(await driver.state(s.id)).toBe('frozen');
      expect((await driver.states()).get(s.id)).toBe('frozen');
      expect(await banner(2)).toBeNull();
      await driver.freeze(s.id); // no-op
      await driver.thaw(s.id);
      expect(await driver.state(s.id)).toBe('running');
      expect((await driver.states()).get(s.id)).toBe('running');
      expect(await until('the banner after thaw', () => banner(), 30_000)).toMatch(/^SSH-2\.0/);
    });

    it('is found again by a fresh driver over the same vmPath (an agent restart)', async () => {
      const restarted = new QemuDriver({ vmPath: driver.vmPath, netns: ns });
      expect(await restarted.list()).toContain(s.id);
      expect(await restarted.state(s.id)).toBe('running');
      expect(await restarted.qemuPid(s.id)).toBe(await driver.qemuPid(s.id));
      expect(await restarted.memoryBytes(s.id)).toBeGreaterThan(0);
      expect((await restarted.exec(s.id, ['hostname'])).stdout).toBe('princeton_vm');
    });

    it('stops cleanly (halt on the control port), starts again and is killed at once', async () => {
      const pid = await driver.qemuPid(s.id);
      let t0 = performance.now();
      await driver.stop(s.id, 30);
      console.log(`clean stop: ${Math.round(performance.now() - t0)} ms`);
      expect(await driver.state(s.id)).toBe('stopped');
      expect(await alive(pid!)).toBe(false);
      expect(await driver.memoryBytes(s.id)).toBeNull();
      expect(await driver.cpuSeconds(s.id)).toBeNull();
      expect((await readdir(join(driver.vmPath, s.id))).sort()).toEqual(['config.json', 'console.log', 'jail', 'qemu.log', 'run']);
      expect(await cgroupLeft(s.id)).toEqual([]);
      expect(await readFile(driver.consoleLog(s.id), 'utf8')).toMatch(/the image's init exited/);
      await driver.stop(s.id); // no-op

      t0 = performance.now();
      await driver.start(s.id); // the second boot keeps its host key and its keys
      expect(await until('the banner after a restart', () => banner(), BOOT_TIMEOUT_MS)).toMatch(/^SSH-2\.0/);
      console.log(`restart to banner: ${Math.round(performance.now() - t0)} ms`);
      expect((await ssh(keys.exec, 'uname -r')).stdout).toBe(driver.nodeBoot.release);

      await driver.freeze(s.id);
      t0 = performance.now();
      await driver.kill(s.id); // the watchdog's kill, also of a frozen VM
      console.log(`kill: ${Math.round(performance.now() - t0)} ms`);
      expect(await driver.state(s.id)).toBe('stopped');
      expect((await driver.states()).get(s.id)).toBe('stopped');
      await driver.kill(s.id); // no-op
    });

    it('is destroyed, running, without a trace', async () => {
      await driver.start(s.id);
      const pid = await driver.qemuPid(s.id);
      expect(pid).not.toBeNull();
      await driver.destroy(s.id);
      expect(await driver.state(s.id)).toBe('absent');
      expect((await driver.states()).has(s.id)).toBe(false);
      expect(await driver.list()).not.toContain(s.id);
      await expect(stat(join(driver.vmPath, s.id))).rejects.toThrow(/ENOENT/);
      expect(await alive(pid!)).toBe(false);
      expect(await strayQemus()).toEqual([]);
      expect(await cgroupLeft(s.id)).toEqual([]);
      await driver.destroy(s.id); // idempotent
      // The tap belongs to the network driver: still there, unowned.
      expect((await run('ip', ['-n', ns, '-o', 'link', 'show', tap])).stdout).toContain(tap);
    });
  });

  it('boots the kernel an image ships, with an initramfs built from its modules', async () => {
    // An image with a kernel: the tiny image plus the node kernel's package tree, as an image with
    // linux-image-amd64 installed has it (/boot/vmlinuz-R, /vmlinuz -> boot/…, /lib/modules/R).
    const s = await sliver('image_kernel');
    const rel = driver.nodeBoot.release;
    const tree = join(driver.nodeBoot.kernel, '..');
    await cp(join(tree, 'boot'), join(s.rootfs, 'boot'), { recursive: true });
    await cp(join(tree, 'lib/modules', rel), join(s.rootfs, 'usr/lib/modules', rel), { recursive: true });
    await run('ln', ['-s', `boot/vmlinuz-${rel}`, join(s.rootfs, 'vmlinuz')]);
    await driver.define(s);
    const config = JSON.parse(await readFile(join(driver.vmPath, s.id, 'config.json'), 'utf8')) as VmConfig;
    expect(config.boot).toEqual({ source: 'image', release: rel, kernel: join(driver.vmPath, s.id, 'boot/vmlinux'), initrd: join(driver.vmPath, s.id, 'boot/initrd.img') });
    await driver.start(s.id);
    expect(await until('the banner of the image-kernel VM', () => banner(), BOOT_TIMEOUT_MS)).toMatch(/^SSH-2\.0/);
    expect((await driver.exec(s.id, ['uname', '-r'])).stdout).toBe(rel);
    await driver.destroy(s.id);
    await expect(stat(join(driver.vmPath, s.id))).rejects.toThrow(/ENOENT/);
  });

  it('refuses what it cannot do, with what to do about it', async () => {
    await expect(driver.start(randomUUID())).rejects.toThrow(/not defined/);
    await expect(driver.define(await sliver('too_small', { memoryMb: 64 }))).rejects.toThrow(/at least 128/);
    await expect(driver.define(await sliver('no_root', { rootfs: join(work, 'missing') }))).rejects.toThrow(/not a directory/);
    const lost = await sliver('no_tap', { net: { link: 'plkt-missing', address: `${guestIp}/30`, gateway: hostIp } });
    await driver.define(lost);
    await expect(driver.start(lost.id)).rejects.toThrow(/tap plkt-missing does not exist in netns pl-kvmt-.*link kind 'tap'/);
    await expect(driver.exec(lost.id, ['true'])).rejects.toThrow(/not running/);
    await driver.destroy(lost.id);
    expect(() => new QemuDriver({ vmPath: `/${'x'.repeat(80)}` })).toThrow(/too long/);
  });
});
