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
  // The plotting library loads only when a page draws plots (the sliver page), not at first load.
  splitting: true,
  chunkNames: 'chunk-[hash]',
  outdir: `${here}dist/assets`,
  metafile: true,
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs);
const entry = (ext) => outputs.find((f) => f.endsWith(ext) && result.metafile.outputs[f].entryPoint);
const js = entry('.js');
const css = outputs.find((f) => f.endsWith('.css'));
if (!js || !css) throw new Error('esbuild made no script or no stylesheet');
const html = readFileSync(`${here}src/index.html`, 'utf8')
  .replace('%SCRIPT%', `/assets/${basename(js)}`)
  .replace('%STYLE%', `/assets/${basename(css)}`);
writeFileSync(`${here}dist/index.html`, html);

// The first load: the page, its script and its stylesheet, as gzip sends them (docs/benchmarks.md).
// The entry's static imports (chunks it shares with lazily loaded code) load with it.
const staticImports = (f) => result.metafile.outputs[f].imports.filter((i) => i.kind === 'import-statement').flatMap((i) => [i.path, ...staticImports(i.path)]);
const files = [`${here}dist/index.html`, js, css, ...new Set(staticImports(js))];
const gz = files.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);
const raw = files.reduce((n, f) => n + readFileSync(f).length, 0);
const later = outputs.filter((f) => !files.includes(f));
const laterGz = later.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);
// The chunks loaded on demand, named by the module that starts them: chart (uPlot), map (world outline).
const gzOf = (f) => gzipSync(readFileSync(f), { level: 9 }).length;
const chunks = Object.fromEntries(later.flatMap((f) => {
  const start = result.metafile.outputs[f].entryPoint;
  return start ? [[basename(start).replace(/\.ts$/, ''), gzOf(f)]] : [];
}));
writeFileSync(`${here}dist/size.json`, JSON.stringify({ raw_bytes: raw, gzip_bytes: gz, later_gzip_bytes: laterGz, later_chunks_gzip_bytes: chunks }) + '\n');
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`web: first load ${kib(raw)}, ${kib(gz)} gzipped; loaded on demand ${kib(laterGz)} gzipped (${Object.entries(chunks).map(([k, v]) => `${k} ${kib(v)}`).join(', ')})`);
