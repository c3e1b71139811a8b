// Where every benchmark's --write goes: its text appended to the results file (docs/benchmarks.md),
// after whatever the file holds now, with one blank line between sections.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

const ROOT = new URL('../../', import.meta.url).pathname;

/**
 * Appends text to file (relative to the repository, or absolute). `heading`, when given, is
 * written first, the first time only: a section that later runs add dated parts to.
 */
export function appendResults(file: string, text: string, heading?: string): void {
  const path = resolve(ROOT, file);
  const old = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n';
  const head = heading && !old.includes(heading.split('\n')[0]!) ? `${heading}\n\n` : '';
  writeFileSync(path, `${old.trimEnd()}\n\n${head}${text.trimEnd()}\n`);
}
