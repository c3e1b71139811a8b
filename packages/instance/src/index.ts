// Slivers as containers for the node agent: the instance driver interface, its registry and the LXC driver.
import type { InstanceDriver } from './driver.js';
import { LxcDriver, type LxcDriverOptions } from './lxc/driver.js';

export type { InstanceCapabilities, InstanceDriver, InstanceSpec, InstanceState } from './driver.js';
export { InvalidSpecError, isSliverId, validateInstanceSpec, IDMAP_SIZE } from './driver.js';
export { LxcDriver, type LxcDriverOptions } from './lxc/driver.js';
export { containerName, idFromContainerName, renderConfig, sharesToWeight, DROPPED_CAPABILITIES, type LxcHostFacts, type RenderOptions } from './lxc/config.js';
export { renderSeccompPolicy, DENIED_BTRFS_IOCTLS, LXC_DEFAULT_SECCOMP_RULES, SECCOMP_POLICY_FILE, type DeniedIoctl } from './lxc/seccomp.js';
export { detectCgroupLayout, parseCgroupLayout, parseMemoryStat, residentBytes, type CgroupLayout, type CgroupVersion } from './lxc/cgroup.js';

/** Instance drivers by name; callers test `capabilities`, not names. The qemu driver joins later. */
export const instanceDrivers: Record<string, (opts: LxcDriverOptions) => InstanceDriver> = {
  lxc: (opts) => new LxcDriver(opts),
};
