// Which code builds this node's slivers. The ledger remembers, per sliver, the document last
// carried out in full under this fingerprint, so a restarted agent leaves settled slivers alone;
// an upgraded one (other code: LXC configs, limits or provisioning may differ) re-checks each
// sliver once.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The workspace packages whose code shapes what a sliver is on the host. */
const BUILDING_PACKAGES = ['api', 'core', 'host', 'instance', 'network', 'storage'];

let memo: string | null = null;

/** A digest of the agent's code: the release bundle's one file, or in a workspace the agent's
 * and its driver packages' built (or source) files. Read once per process. */
export function codeFingerprint(): string {
  if (memo) return memo;
  const self = fileURLToPath(import.meta.url);
  const hash = createHash('sha256');
  if (self.endsWith('.mjs')) {
    hash.update(readFileSync(self));
  } else {
    // apps/agent/dist (or src under the test runner) and packages/*/dist (or src) beside it.
    const appDir = dirname(self);
    const root = resolve(appDir, '..', '..', '..');
    const dirs = [appDir, ...BUILDING_PACKAGES.map((p) => join(root, 'packages', p, basename(appDir)))];
    for (const dir of dirs) {
      for (const file of codeFiles(dir)) hash.update(`${file.slice(root.length)}\0`).update(readFileSync(file));
    }
  }
  memo = hash.digest('base64url').slice(0, 22);
  return memo;
}

function codeFiles(dir: string): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true, recursive: true });
  } catch {
    return [];
  }
  return entries
    .filter((e) => e.isFile() && /\.(js|ts)$/.test(e.name) && !e.name.endsWith('.d.ts'))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}
