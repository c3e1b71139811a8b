// What this node offers, as the registry wants it at enrollment: resources. What it can run
// (capabilities) is what its drivers' checks find once `run` starts (instances.ts).
import { cpus, hostname as osHostname, totalmem } from 'node:os';
import { statfsSync } from 'node:fs';
import type { NodeResources } from '@planetlite/api';

export function probeResources(dir: string): NodeResources {
  const fs = statfsSync(dir);
  return {
    cpus: Math.max(1, cpus().length),
    memory_mb: Math.floor(totalmem() / 2 ** 20),
    disk_mb: Math.max(1, Math.floor((fs.bavail * fs.bsize) / 2 ** 20)),
  };
}

export function defaultHostname(): string {
  return osHostname();
}
