// The LXC config of a sliver, rendered as a pure function of its spec and the host's facts.
import { join } from 'node:path';
import { IDMAP_SIZE, isSliverId, validateInstanceSpec, type InstanceLimits, type InstanceSpec } from '../driver.js';
import type { CgroupLayout } from './cgroup.js';

/** What check() learned about the host that changes the config. */
export interface LxcHostFacts {
  cgroups: CgroupLayout;
  /** The driver's seccomp policy file (LXC's default policy plus the btrfs subvolume and quota
   * ioctls, see seccomp.ts), when the kernel has seccomp. */
  seccompProfile: string | null;
  /** AppArmor is enabled in the kernel. */
  apparmor: boolean;
}

export interface RenderOptions {
  /** The driver's lxcpath; the container's logs live in <lxcPath>/<name>/. */
  lxcPath: string;
  /** The container's init; the sliver image's own /sbin/init unless a probe says otherwise. */
  init?: string;
}

const PREFIX = 'sl-';

/** Deterministic container name of a sliver. */
export function containerName(id: string): string {
  return PREFIX + id;
}

/** The sliver id behind a container name, or null for anything this driver did not name. */
export function idFromContainerName(name: string): string | null {
  const id = name.startsWith(PREFIX) ? name.slice(PREFIX.length) : '';
  return isSliverId(id) ? id : null;
}

/** Capabilities no sliver keeps: CoreLab's list (sys_module, sys_boot, mknod) plus the ones that
 * reach the whole host (clock, raw I/O, MAC policy). In a user namespace most already fail; dropping
 * them from the bounding set also makes them impossible to regain through file capabilities. */
export const DROPPED_CAPABILITIES = ['sys_module', 'sys_boot', 'mknod', 'sys_time', 'sys_rawio', 'mac_admin', 'mac_override'] as const;

/** A privileged sliver's root is the host's root, so it also loses what the user namespace would
 * otherwise confine (CoreLab dropped sys_admin too); setfcap so no file can hand a capability back. */
export const PRIVILEGED_EXTRA_DROPS = ['sys_admin', 'setfcap', 'sys_pacct', 'syslog', 'audit_control', 'wake_alarm', 'block_suspend', 'bpf', 'perfmon'] as const;

/** Devices a sliver may open (LXC's common allowlist minus mknod-anything). */
const ALLOWED_DEVICES = [
  'c 1:3 rwm', // /dev/null
  'c 1:5 rwm', // /dev/zero
  'c 1:7 rwm', // /dev/full
  'c 1:8 rwm', // /dev/random
  'c 1:9 rwm', // /dev/urandom
  'c 5:0 rwm', // /dev/tty
  'c 5:1 rwm', // /dev/console
  'c 5:2 rwm', // /dev/ptmx
  'c 136:* rwm', // /dev/pts/*
];

/** cgroup v1 cpu.shares → v2 cpu.weight, the mapping runc and systemd use. */
export function sharesToWeight(shares: number): number {
  return Math.min(10000, Math.max(1, 1 + Math.floor(((shares - 2) * 9999) / 262142)));
}

const CFS_PERIOD_US = 100_000;

/** One resource limit: its LXC config key, its cgroup file, the controller that holds the file
 * (for finding the sliver's cgroup in that hierarchy), and its value. */
export interface ResourceLimit {
  key: string;
  file: string;
  controller: 'memory' | 'cpu' | 'pids';
  value: string;
}

/**
 * The sliver's resource limits: memory, cpu weight and cap, pids, on whichever hierarchy holds
 * each controller. The config applies them at start; a running sliver gets them written into its
 * cgroups, each pass, whenever a live value differs (LxcDriver.applyLimits).
 */
export function resourceLimits(spec: Omit<InstanceLimits, 'id'>, cg: CgroupLayout): ResourceLimit[] {
  const at = (version: 'v1' | 'v2', file: string, value: number) => ({ key: version === 'v1' ? `lxc.cgroup.${file}` : `lxc.cgroup2.${file}`, file, controller: file.split('.')[0] as ResourceLimit['controller'], value: String(value) });
  const out: ResourceLimit[] = [];
  const bytes = spec.memoryMb * 1024 * 1024;
  if (cg.memory) out.push(at(cg.memory, cg.memory === 'v1' ? 'memory.limit_in_bytes' : 'memory.max', bytes));
  if (cg.cpu) out.push(cg.cpu === 'v1' ? at('v1', 'cpu.shares', spec.cpuShares) : at('v2', 'cpu.weight', sharesToWeight(spec.cpuShares)));
  // The hard cap: CFS quota per 100 ms period. Always written (-1 / max = no cap), so lifting a
  // cap also reaches a running sliver.
  if (cg.cpu === 'v1') {
    out.push(at('v1', 'cpu.cfs_period_us', CFS_PERIOD_US), at('v1', 'cpu.cfs_quota_us', spec.cpuCapPercent ? spec.cpuCapPercent * (CFS_PERIOD_US / 100) : -1));
  } else if (cg.cpu === 'v2') {
    const quota = spec.cpuCapPercent ? String(spec.cpuCapPercent * (CFS_PERIOD_US / 100)) : 'max';
    out.push({ key: 'lxc.cgroup2.cpu.max', file: 'cpu.max', controller: 'cpu', value: `${quota} ${CFS_PERIOD_US}` });
  }
  if (spec.pids !== undefined && cg.pids) out.push(at(cg.pids, 'pids.max', spec.pids));
  return out;
}

/** The limit lines for this host's layout; a controller the host lacks gets a comment instead. */
function limitLines(spec: InstanceSpec, cg: CgroupLayout): string[] {
  const lines = resourceLimits(spec, cg).map((l) => `${l.key} = ${l.value}`);
  if (!cg.memory) lines.push('# no memory controller on this host: memory is not limited');
  if (!cg.cpu) lines.push('# no cpu controller on this host: cpu is not weighted');
  if (spec.pids !== undefined && !cg.pids) lines.push('# no pids controller on this host: processes are not limited');
  if (cg.devices) {
    const devices = cg.devices === 'v1' ? 'lxc.cgroup.devices' : 'lxc.cgroup2.devices';
    lines.push(`${devices}.deny = a`, ...ALLOWED_DEVICES.map((d) => `${devices}.allow = ${d}`));
  }
  return lines;
}

/** The sliver's LXC config file. Validates the spec first, so no field can add a line. */
export function renderConfig(spec: InstanceSpec, host: LxcHostFacts, opts: RenderOptions): string {
  validateInstanceSpec(spec);
  const name = containerName(spec.id);
  const dir = join(opts.lxcPath, name);
  const unprivileged = spec.idmapBase !== null;
  const drops = unprivileged ? DROPPED_CAPABILITIES : [...DROPPED_CAPABILITIES, ...PRIVILEGED_EXTRA_DROPS];
  const lines = [
    `# PlanetLite sliver ${spec.id} of slice ${spec.hostname}; written by @planetlite/instance, do not edit.`,
    `lxc.uts.name = ${spec.hostname}`,
    `lxc.rootfs.path = dir:${spec.rootfs}`,
  ];
  if (spec.idmapBase !== null) {
    lines.push(
      ...(spec.rootfsShifted
        ? ['# Unprivileged: root inside is host uid/gid H. The rootfs (a layered root) already holds host', '# ids H + n: its image layer is idmapped by the storage driver.']
        : [
            '# Unprivileged: root inside is host uid/gid H. The rootfs is an idmapped mount, so files stay',
            '# uid 0 on disk (shared with the base image) and need no chown.',
            'lxc.rootfs.options = idmap=container',
          ]),
      `lxc.idmap = u 0 ${spec.idmapBase} ${IDMAP_SIZE}`,
      `lxc.idmap = g 0 ${spec.idmapBase} ${IDMAP_SIZE}`,
    );
  } else {
    lines.push('# Privileged: only because this host cannot run unprivileged slivers.');
  }
  lines.push(
    // lxc.init.cmd is split on spaces with no shell quoting: point it at a program, not a command line.
    `lxc.init.cmd = ${opts.init ?? '/sbin/init'}`,
    '# LXC mounts /proc, /sys, /dev and the cgroups; the image mounts nothing of its own.',
    '# proc:mixed = /proc/sys read-only except net; force = mount cgroups even though the',
    '# sliver could (cgroup namespace), since the image init will not.',
    'lxc.autodev = 1',
    'lxc.mount.auto = proc:mixed sys:ro cgroup:mixed:force',
    '# No ttys, so no getty; ptys for ssh sessions; the console goes to a bounded log file.',
    'lxc.tty.max = 0',
    'lxc.pty.max = 256',
    `lxc.console.logfile = ${join(dir, 'console.log')}`,
    'lxc.console.size = auto',
    `lxc.cap.drop = ${drops.join(' ')}`,
  );
  if (host.seccompProfile) lines.push('# No btrfs subvolumes or snapshots from inside: each would escape the disk quota.', `lxc.seccomp.profile = ${host.seccompProfile}`);
  else lines.push('# no seccomp on this host');
  lines.push(`lxc.apparmor.profile = ${host.apparmor ? 'generated' : 'unconfined'}`);
  if (host.apparmor) lines.push('lxc.apparmor.allow_nesting = 0');
  lines.push(...limitLines(spec, host.cgroups));
  if (spec.net) {
    lines.push(
      '# The network driver made this interface; LXC moves it in as eth0 and back out on stop.',
      'lxc.net.0.type = phys',
      `lxc.net.0.link = ${spec.net.link}`,
      'lxc.net.0.name = eth0',
      'lxc.net.0.flags = up',
      `lxc.net.0.ipv4.address = ${spec.net.address}`,
      `lxc.net.0.ipv4.gateway = ${spec.net.gateway}`,
    );
  } else {
    lines.push('lxc.net.0.type = empty');
  }
  lines.push(`lxc.log.file = ${join(dir, 'lxc.log')}`, 'lxc.log.level = WARN');
  return lines.join('\n') + '\n';
}
