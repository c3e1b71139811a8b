// What this node offers, as the registry wants it at enrollment: resources and capabilities.
import { cpus, hostname as osHostname, machine, totalmem } from 'node:os';
import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
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
 * Sliver kinds this node can run: LXC when the tools for its slivers are installed (`run`
 * checks the kernel side before it starts), KVM not yet (issue 5). The registry places no
 * sliver of a kind a node lacks.
 */
export function probeCapabilities(): NodeCapabilities {
  const lxc = ['lxc-start', 'mkfs.btrfs', 'nft'].every(onPath);
  return { lxc, kvm: false, kvm_accel: null, arch: machine() };
}

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .concat(['/usr/sbin', '/sbin'])
    .some((dir) => existsSync(join(dir, tool)));
}

export function defaultHostname(): string {
  return osHostname();
}
