// What an image archive may hold before it is extracted as root into the pool: the registry's
// sha256 says the archive is the published one, not that its publisher meant well. tar strips a
// leading / and skips .. by itself, but goes on with the rest; here such an archive is refused
// whole, before anything of it is written, with the first member that is wrong.
import { run } from '@planetlite/host';
import { StorageError } from '../errors.js';

/** Character devices a root filesystem may carry (null, zero, full, random, urandom, tty, console, ptmx). */
const HARMLESS_DEVICES = new Set(['1,3', '1,5', '1,7', '1,8', '1,9', '5,0', '5,1', '5,2']);
const LINE = /^([-hlcbdps])[-rwxsStT]{9} +\d+\/\d+ +(\d+|\d+, *\d+) +\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d(?:\.\d+)?)? (.*)$/;

/** The member's path inside the tree, './' and trailing '/' dropped. */
function inTree(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
}

function escapes(name: string): boolean {
  return name.startsWith('/') || name.split('/').includes('..');
}

/** Throws StorageError archive_unsafe naming the first member that may not be extracted. */
export async function checkArchive(archive: string, compressionFlag: string | null, timeoutMs: number): Promise<void> {
  const { stdout, stderr } = await run('tar', ['--list', '--verbose', '--numeric-owner', '--full-time', '--quoting-style=escape', '--file', archive, ...(compressionFlag ? [compressionFlag] : [])], { timeoutMs });
  const symlinks = new Set<string>();
  const refuse = (why: string) => {
    throw new StorageError('archive_unsafe', `image archive refused: ${why}`);
  };
  // tar lists (and would extract) such names with the prefix dropped: only its warning tells.
  const stripped = /^tar: (Removing leading .*)$/m.exec(stderr);
  if (stripped) return refuse(`members or link targets point outside the image's tree (tar: ${stripped[1]})`);
  for (const line of stdout.split('\n')) {
    if (!line) continue;
    const m = LINE.exec(line);
    if (!m) return refuse(`a member tar lists as ${JSON.stringify(line.slice(0, 120))} cannot be checked`);
    const type = m[1]!;
    const size = m[2]!;
    let name = m[3]!;
    let target: string | null = null;
    if (type === 'l' || type === 'h') {
      const sep = type === 'l' ? ' -> ' : ' link to ';
      const at = name.indexOf(sep);
      if (at < 0) return refuse(`the link ${JSON.stringify(name.slice(0, 120))} names no target`);
      target = name.slice(at + sep.length);
      name = name.slice(0, at);
    }
    if (escapes(name)) return refuse(`member ${JSON.stringify(name)} lies outside the image's tree`);
    const path = inTree(name);
    // A member under a symlink of the same archive would be written wherever the link points.
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const above = parts.slice(0, i).join('/');
      if (symlinks.has(above)) return refuse(`member ${JSON.stringify(name)} lies under the symlink ${JSON.stringify(above)} of the same archive`);
    }
    if (type === 'l') symlinks.add(path);
    if (type === 'h' && escapes(target!)) return refuse(`hard link ${JSON.stringify(name)} points outside the image's tree (${JSON.stringify(target)})`);
    if (type === 'b') return refuse(`member ${JSON.stringify(name)} is a block device`);
    if (type === 'c' && !HARMLESS_DEVICES.has(size.replace(/ /g, ''))) return refuse(`member ${JSON.stringify(name)} is the character device ${size.replace(/ /g, '')}, not one a root filesystem needs`);
  }
}
