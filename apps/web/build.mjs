// Builds the dashboard into dist/: one script and one stylesheet, named by their content's hash,
// and an index.html that loads them. No inline script, so the registry's CSP can forbid it.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

const here = new URL('.', import.meta.url).pathname;
rmSync(`${here}dist`, { recursive: true, force: true });
mkdirSync(`${here}dist/assets`, { recursive: true });

const result = await build({
  entryPoints: { app: `${here}src/main.ts` },
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  entryNames: '[name]-[hash]',
  outdir: `${here}dist/assets`,
  metafile: true,
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs);
const js = outputs.find((f) => f.endsWith('.js'));
const css = outputs.find((f) => f.endsWith('.css'));
if (!js || !css) throw new Error('esbuild made no script or no stylesheet');
const html = readFileSync(`${here}src/index.html`, 'utf8')
  .replace('%SCRIPT%', `/assets/${basename(js)}`)
  .replace('%STYLE%', `/assets/${basename(css)}`);
writeFileSync(`${here}dist/index.html`, html);

// The first load: the page, its script and its stylesheet, as gzip sends them (docs/benchmarks.md).
const files = [`${here}dist/index.html`, js, css];
const gz = files.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);
const raw = files.reduce((n, f) => n + readFileSync(f).length, 0);
writeFileSync(`${here}dist/size.json`, JSON.stringify({ raw_bytes: raw, gzip_bytes: gz }) + '\n');
console.log(`web: first load ${(raw / 1024).toFixed(1)} KiB, ${(gz / 1024).toFixed(1)} KiB gzipped`);
