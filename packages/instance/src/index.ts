// Slivers as containers or VMs for the node agent: the instance driver interface, its registry,
// the LXC driver and the qemu driver.
import type { InstanceDriver } from './driver.js';
import { LxcDriver, type LxcDriverOptions } from './lxc/driver.js';
import { QemuDriver, type QemuDriverOptions } from './qemu/driver.js';

export type { InstanceCapabilities, InstanceDriver, InstanceDriverStatus, InstanceLimits, InstanceSpec, InstanceState, LimitDrift } from './driver.js';
export { InstanceError, isInstanceError, type InstanceErrorCode } from './errors.js';
export { InvalidSpecError, isSliverId, validateInstanceSpec, trackCheck, IDMAP_SIZE } from './driver.js';
export { LxcDriver, type LxcDriverOptions } from './lxc/driver.js';
export { containerName, idFromContainerName, renderConfig, resourceLimits, sharesToWeight, DROPPED_CAPABILITIES, type LxcHostFacts, type RenderOptions } from './lxc/config.js';
export { renderSeccompPolicy, DENIED_BTRFS_IOCTLS, LXC_DEFAULT_SECCOMP_RULES, SECCOMP_POLICY_FILE, type DeniedIoctl } from './lxc/seccomp.js';
export { detectCgroupLayout, missingLimits, parseCgroupLayout, parseMemoryStat, parsePressure, residentBytes, type CgroupLayout, type CgroupVersion, type Psi } from './lxc/cgroup.js';
export { QemuDriver, type QemuDriverOptions } from './qemu/driver.js';
export { renderQemuArgv, vmJailSpec, QEMU_PATH, kernelCommandLine, validateVmConfig, vmConfigFromSpec, vmPaths, vcpusFor, macFor, netmask, qemuOpt, VM_MIN_MEMORY_MB, type Accel, type BootAssets, type VmConfig, type VmNet, type VmPaths } from './qemu/config.js';
export { jailArgv, validateJailSpec, JAIL_SCRIPT, JAIL_TAP_FD, JAIL_KEPT_CAPS, type JailSpec } from './qemu/jail.js';
export { vmLimits, ioWeights, VM_MEMORY_OVERHEAD_MB } from './qemu/cgroup.js';
export { probeAccel, probeBoot, type AccelProbeOptions } from './qemu/probe.js';
export { nodeKernel, imageKernel, findImageKernel, extractVmlinux, resolveInRoot, DEFAULT_KERNEL_CACHE } from './qemu/kernel.js';
export { buildInitramfs, newcArchive, INIT_SCRIPT, INITRAMFS_MODULES } from './qemu/initramfs.js';
export { execRequest, parseExecResult } from './qemu/channel.js';

/** Options of every driver the registry can build; each takes the fields it needs. */
export type InstanceDriverOptions = LxcDriverOptions & Partial<QemuDriverOptions>;

/** Instance drivers by name; callers test `capabilities`, not names. */
export const instanceDrivers: Record<string, (opts: InstanceDriverOptions) => InstanceDriver> = {
  lxc: (opts) => new LxcDriver(opts),
  // Its own directory beside the lxcpath unless given.
  qemu: (opts) => new QemuDriver({ ...opts, vmPath: opts.vmPath ?? `${opts.lxcPath.replace(/\/+$/, '')}-vm` }),
};
