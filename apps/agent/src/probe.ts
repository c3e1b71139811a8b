// What this node offers, as the registry wants it at enrollment: resources and capabilities.
import { cpus, hostname as osHostname, totalmem } from 'node:os';
import { statfsSync } from 'node:fs';
import type { NodeCapabilities, NodeResources } from '@planetlite/api';

export function probeResources(dir: string): NodeResources {
  const fs = statfsSync(dir);
  return {
    cpus: Math.max(1, cpus().length),
    memory_mb: Math.floor(totalmem() / 2 ** 20),
    disk_mb: Math.max(1, Math.floor((fs.bavail * fs.bsize) / 2 ** 20)),
  };
}

/**
 * Sliver kinds this agent can run. Both are false until the LXC and qemu instance drivers land
 * (issues 3 and 5): the registry then refuses to place slivers here rather than leaving them
 * pending forever.
 */
export function probeCapabilities(): NodeCapabilities {
  return { lxc: false, kvm: false, kvm_accel: null };
}

export function defaultHostname(): string {
  return osHostname();
}
