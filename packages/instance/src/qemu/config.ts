// A KVM sliver's VM config (the JSON the driver keeps per sliver) and the qemu argv rendered from
// it: pure functions of the spec and host facts, so both are unit-tested without a host.
import { createHash } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { InvalidSpecError, isSliverId, validateInstanceSpec, type InstanceSpec } from '../driver.js';
import { JAIL_TAP_FD, type JailSpec } from './jail.js';

export const QEMU = 'qemu-system-x86_64';
/** Where the jail finds it: qemu's mount namespace holds /usr and little else. */
export const QEMU_PATH = `/usr/bin/${QEMU}`;
export const CONFIG_VERSION = 1;
/** The kernel alone takes ≈ 60 MiB of guest RAM once loaded; below this a VM does not reach its init. */
export const VM_MIN_MEMORY_MB = 128;

export type Accel = 'kvm' | 'tcg';

/** Where the VM's kernel and initramfs come from (see kernel.ts). */
export interface BootAssets {
  /** 'node': the node's Debian kernel; 'image': the kernel the image ships, with an initramfs
   * built from the image's own modules. The initramfs is always the node-built one. */
  source: 'node' | 'image';
  /** The kernel release (uname -r inside the guest). */
  release: string;
  /** An ELF vmlinux (booted through its PVH entry) or a bzImage. */
  kernel: string;
  initrd: string;
}

export interface VmNet {
  /** A tap device in the node's network namespace, made by the network driver; qemu opens it by name. */
  tap: string;
  address: string;
  prefix: number;
  gateway: string;
  mac: string;
}

/** Everything a start needs, written by define() as <vmPath>/<id>/config.json. */
export interface VmConfig {
  version: typeof CONFIG_VERSION;
  id: string;
  hostname: string;
  /** The sliver's root directory, served to the guest over virtio-9p. */
  rootfs: string;
  memoryMb: number;
  vcpus: number;
  /** Host uid/gid of the guest's root: qemu runs as it, in a user namespace mapping the guest's
   * 0..65535 to idmapBase.. (jail.ts), as an LXC sliver's root does. */
  idmapBase: number;
  /** The sliver's cgroup limits besides memory (cgroup.ts). */
  limits: { cpuShares: number; cpuCapPercent: number | null; pids: number | null };
  net: VmNet | null;
  boot: BootAssets;
}

/** Per-sliver runtime files, all in the sliver's own directory. */
export interface VmPaths {
  dir: string;
  config: string;
  pidfile: string;
  qmp: string;
  /** The control serial port (ttyS1): halt and exec, served by the initramfs's PID 1. */
  control: string;
  console: string;
  /** qemu's own stderr (why a start failed). */
  qemuLog: string;
  /** Present while the driver has the VM paused (states() reads it instead of asking QMP). */
  frozenMark: string;
  /** Owned by the VM's uid: the only directory qemu may write in (its sockets). */
  run: string;
  /** An empty directory the jail's root is mounted on, inside qemu's mount namespace only. */
  jail: string;
}

export function vmPaths(vmPath: string, id: string): VmPaths {
  if (!isSliverId(id)) throw new InvalidSpecError(`sliver id must be a lowercase uuid, got ${JSON.stringify(id)}`);
  const dir = join(vmPath, id);
  const at = (name: string) => join(dir, name);
  return {
    dir,
    config: at('config.json'),
    pidfile: at('qemu.pid'),
    qmp: join(dir, 'run', 'qmp.sock'),
    control: join(dir, 'run', 'control.sock'),
    console: at('console.log'),
    qemuLog: at('qemu.log'),
    frozenMark: at('frozen'),
    run: at('run'),
    jail: at('jail'),
  };
}

/** Slices have no vCPU count: one vCPU per started 100 % of CPU cap (one without a cap), at most
 * the host's CPUs. cpuShares is a weight between slivers, not a size, so it does not add vCPUs. */
export function vcpusFor(spec: Pick<InstanceSpec, 'cpuCapPercent'>, hostCpus: number): number {
  const wanted = spec.cpuCapPercent == null ? 1 : Math.ceil(spec.cpuCapPercent / 100);
  return Math.max(1, Math.min(wanted, hostCpus));
}

/** A stable locally administered MAC (QEMU's 52:54:00 prefix) from the sliver id. */
export function macFor(id: string): string {
  const h = createHash('sha256').update(id).digest();
  return ['52', '54', '00', ...[h[0], h[1], h[2]].map((b) => (b ?? 0).toString(16).padStart(2, '0'))].join(':');
}

/** The VM config of a spec; throws InvalidSpecError naming the first field a VM cannot take. */
export function vmConfigFromSpec(spec: InstanceSpec, boot: BootAssets, hostCpus: number): VmConfig {
  validateInstanceSpec(spec);
  if (spec.memoryMb < VM_MIN_MEMORY_MB)
    throw new InvalidSpecError(`instance spec memoryMb is ${spec.memoryMb}, but a VM sliver needs at least ${VM_MIN_MEMORY_MB} (its kernel alone takes ≈ 60 MiB)`);
  if (spec.idmapBase === null)
    throw new InvalidSpecError('instance spec idmapBase must be a host id range for a VM sliver: its qemu runs as the sliver\'s own unprivileged ids');
  if (spec.rootfsShifted)
    throw new InvalidSpecError('instance spec rootfsShifted is for containers: a VM sliver\'s root is a snapshot whose files keep the ids the guest sees (its jail idmaps it)');
  const config: VmConfig = {
    version: CONFIG_VERSION,
    id: spec.id,
    hostname: spec.hostname,
    rootfs: spec.rootfs,
    memoryMb: spec.memoryMb,
    vcpus: vcpusFor(spec, hostCpus),
    idmapBase: spec.idmapBase,
    limits: { cpuShares: spec.cpuShares, cpuCapPercent: spec.cpuCapPercent ?? null, pids: spec.pids ?? null },
    net: spec.net && {
      tap: spec.net.link,
      address: spec.net.address.split('/')[0] ?? '',
      prefix: Number(spec.net.address.split('/')[1]),
      gateway: spec.net.gateway,
      mac: macFor(spec.id),
    },
    boot,
  };
  validateVmConfig(config);
  return config;
}

const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const HOSTNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const MAC = /^52:54:00(:[0-9a-f]{2}){3}$/;

/** Throws an Error naming the first bad field of a config (one define() made, or one read back
 * from disk that may be damaged or from another version). Every value that reaches the qemu
 * argv or the kernel command line is checked here. */
export function validateVmConfig(c: unknown): asserts c is VmConfig {
  const bad = (field: string, why: string): never => {
    throw new InvalidSpecError(`vm config ${field} ${why}`);
  };
  if (typeof c !== 'object' || c === null) return bad('', 'must be an object');
  const v = c as Partial<Record<keyof VmConfig, unknown>>;
  if (v.version !== CONFIG_VERSION) bad('version', `must be ${CONFIG_VERSION}, got ${JSON.stringify(v.version)} (redefine the sliver)`);
  if (typeof v.id !== 'string' || !isSliverId(v.id)) bad('id', `must be a lowercase uuid, got ${JSON.stringify(v.id)}`);
  if (typeof v.hostname !== 'string' || !HOSTNAME.test(v.hostname)) bad('hostname', `must be 1-63 of [A-Za-z0-9_.-], got ${JSON.stringify(v.hostname)}`);
  if (!isPath(v.rootfs) || v.rootfs === '/') bad('rootfs', `must be an absolute directory other than /, got ${JSON.stringify(v.rootfs)}`);
  if (!isInt(v.memoryMb, VM_MIN_MEMORY_MB, 1 << 22)) bad('memoryMb', `must be an integer from ${VM_MIN_MEMORY_MB} to ${1 << 22}, got ${JSON.stringify(v.memoryMb)}`);
  if (!isInt(v.vcpus, 1, 255)) bad('vcpus', `must be an integer from 1 to 255, got ${JSON.stringify(v.vcpus)}`);
  if (!isInt(v.idmapBase, 65536, 2 ** 32 - 1 - 2 * 65536)) bad('idmapBase', `must be a host id from 65536, got ${JSON.stringify(v.idmapBase)} (define the sliver again)`);
  const l = v.limits as Partial<VmConfig['limits']> | undefined;
  if (typeof l !== 'object' || l === null) return bad('limits', 'is missing (define the sliver again)');
  if (!isInt(l.cpuShares, 2, 262144)) bad('limits.cpuShares', `must be an integer from 2 to 262144, got ${JSON.stringify(l.cpuShares)}`);
  if (l.cpuCapPercent !== null && !isInt(l.cpuCapPercent, 1, 12_800)) bad('limits.cpuCapPercent', `must be an integer from 1 to 12800 or null, got ${JSON.stringify(l.cpuCapPercent)}`);
  if (l.pids !== null && !isInt(l.pids, 8, 4194304)) bad('limits.pids', `must be an integer from 8 to 4194304 or null, got ${JSON.stringify(l.pids)}`);
  if (v.net !== null) validateNet(v.net, bad);
  const boot = v.boot as Partial<BootAssets> | undefined;
  if (typeof boot !== 'object' || boot === null) return bad('boot', 'is missing');
  if (boot.source !== 'node' && boot.source !== 'image') bad('boot.source', `must be node or image, got ${JSON.stringify(boot.source)}`);
  if (typeof boot.release !== 'string' || !/^[A-Za-z0-9._+~-]{1,64}$/.test(boot.release)) bad('boot.release', `must be a kernel release, got ${JSON.stringify(boot.release)}`);
  if (!isPath(boot.kernel)) bad('boot.kernel', `must be an absolute path, got ${JSON.stringify(boot.kernel)}`);
  if (!isPath(boot.initrd)) bad('boot.initrd', `must be an absolute path, got ${JSON.stringify(boot.initrd)}`);
}

function validateNet(net: unknown, bad: (field: string, why: string) => never): void {
  if (typeof net !== 'object' || net === null) return bad('net', 'must be an object or null');
  const n = net as Partial<VmNet>;
  if (typeof n.tap !== 'string' || !IFNAME.test(n.tap)) bad('net.tap', `must be an interface name (1-15 of [A-Za-z0-9_.-]), got ${JSON.stringify(n.tap)}`);
  if (typeof n.address !== 'string' || !isIPv4(n.address)) bad('net.address', `must be an IPv4 address, got ${JSON.stringify(n.address)}`);
  if (!isInt(n.prefix, 1, 32)) bad('net.prefix', `must be an integer from 1 to 32, got ${JSON.stringify(n.prefix)}`);
  if (typeof n.gateway !== 'string' || !isIPv4(n.gateway)) bad('net.gateway', `must be an IPv4 address, got ${JSON.stringify(n.gateway)}`);
  if (typeof n.mac !== 'string' || !MAC.test(n.mac)) bad('net.mac', `must be a 52:54:00:xx:xx:xx MAC, got ${JSON.stringify(n.mac)}`);
}

function isInt(x: unknown, min: number, max: number): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= min && x <= max;
}

function isPath(x: unknown): x is string {
  return typeof x === 'string' && isAbsolute(x) && !/[\n\r\0]/.test(x);
}

/** Dotted netmask of a prefix length, for the kernel's ip= parameter. */
export function netmask(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.');
}

/** A value inside a qemu option list (`-fsdev local,path=…`): a comma is written twice. */
export function qemuOpt(value: string): string {
  return value.replace(/,/g, ',,');
}

/** The kernel command line. The node-built initramfs reads root=, rootfstype=, rootflags= and
 * ip= (CLIENT::GW:NETMASK:HOST:DEV:off) as Debian's initramfs-tools does. */
export function kernelCommandLine(c: VmConfig): string {
  const parts = [
    'console=ttyS0',
    'rw',
    'root=root',
    'rootfstype=9p',
    // cache=mmap is write-through: host writes into the snapshot are visible in the guest at once.
    'rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=mmap',
  ];
  if (c.net) parts.push(`ip=${c.net.address}::${c.net.gateway}:${netmask(c.net.prefix)}:${c.hostname}:eth0:off`, 'net.ifnames=0');
  parts.push('panic=-1', 'quiet');
  return parts.join(' ');
}

/** -accel of each accelerator. tb-size: TCG's translation cache is 1 GiB by default and an idle
 * guest fills ≈ 80 MiB of it; 32 MiB keeps boots as fast. */
export function accelArgs(accel: Accel): string[] {
  return accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi,tb-size=32'];
}

/** Seccomp for qemu itself. No spawn and no privilege changes: so no -daemonize and no -runas
 * (the driver spawns qemu detached instead). */
export const QEMU_SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/** The qemu arguments (after the binary name) that boot a VM config. */
export function renderQemuArgv(c: VmConfig, paths: VmPaths, accel: Accel): string[] {
  const args = ['-name', c.hostname, '-uuid', c.id];
  args.push(...accelArgs(accel), '-machine', 'pc,memory-backend=mem', '-m', String(c.memoryMb), '-smp', String(c.vcpus));
  // Guest RAM in a memfd: the host's shmem THP setting (normally never) applies instead of qemu's
  // MADV_HUGEPAGE on anonymous RAM, which makes each 4 KiB the guest touches cost 2 MiB.
  args.push('-object', `memory-backend-memfd,id=mem,size=${c.memoryMb}M,share=on`);
  args.push('-nodefaults', '-display', 'none', '-no-reboot');
  args.push('-kernel', c.boot.kernel, '-initrd', c.boot.initrd, '-append', kernelCommandLine(c));
  // passthrough: the guest sees the snapshot's own owners, through the jail's idmapped mount (jail.ts:
  // why not mapped-xattr or virtiofsd).
  args.push('-fsdev', `local,id=rootfs,path=${qemuOpt(c.rootfs)},security_model=passthrough,multidevs=remap`);
  args.push('-device', 'virtio-9p-pci,fsdev=rootfs,mount_tag=root');
  if (c.net) {
    // fd: the jail helper opens the tap as root and hands it over (qemu cannot open /dev/net/tun).
    args.push('-netdev', `tap,id=n0,fd=${JAIL_TAP_FD}`);
    // romfile=: no iPXE option ROM to load, the kernel is given directly.
    args.push('-device', `virtio-net-pci,netdev=n0,mac=${c.net.mac},romfile=`);
  }
  args.push('-device', 'virtio-rng-pci', '-device', 'virtio-balloon-pci,free-page-reporting=on');
  // ttyS0: console, appended across boots (the driver rotates it); ttyS1: the control port.
  args.push('-chardev', `file,id=console,path=${qemuOpt(paths.console)},append=on`, '-serial', 'chardev:console');
  args.push('-chardev', `socket,id=control,path=${qemuOpt(paths.control)},server=on,wait=off`, '-serial', 'chardev:control');
  args.push('-chardev', `socket,id=qmp,path=${qemuOpt(paths.qmp)},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control');
  args.push('-pidfile', paths.pidfile, '-sandbox', QEMU_SANDBOX);
  return args;
}

/** Devices qemu opens inside its jail (and /dev/kvm under KVM). */
export const JAIL_DEVICES = ['null', 'zero', 'full', 'random', 'urandom'] as const;

/** The jail of a VM config: what qemu's mount namespace holds besides the sliver root, and the
 * rest of the helper's spec (jail.ts). cgroups and extraGid are the caller's (host facts). */
export function vmJailSpec(c: VmConfig, paths: VmPaths, host: { accel: Accel; ldCache: boolean; cgroups: string[]; extraGid: number | null }): JailSpec {
  const binds: JailSpec['binds'] = [['/usr', 'ro'], [c.boot.kernel, 'ro'], [c.boot.initrd, 'ro'], [paths.run, 'rw'], [paths.pidfile, 'rw'], [paths.console, 'rw']];
  if (host.ldCache) binds.push(['/etc/ld.so.cache', 'ro']);
  for (const dev of [...JAIL_DEVICES, ...(host.accel === 'kvm' ? ['kvm'] : [])]) binds.push([`/dev/${dev}`, 'dev']);
  return { idmapBase: c.idmapBase, rootfs: c.rootfs, jail: paths.jail, binds, cgroups: host.cgroups, tap: c.net?.tap ?? null, extraGid: host.extraGid, cwd: paths.run };
}
