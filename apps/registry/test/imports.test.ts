// The registry's module graph: no import cycle (type-only imports count too), and the tiers point
// one way: routes → services → repositories, plugins never below routes.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sources(path);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && !e.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Relative imports and re-exports of every source file, as paths relative to src. */
function importGraph(src: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const spec = /(?:^|\n)\s*(?:import|export)\b[^'";]*?from\s*['"](\.[^'"]+)['"]|(?:^|\n)\s*import\s*['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;
  for (const file of sources(src)) {
    const text = readFileSync(file, 'utf8');
    const deps: string[] = [];
    for (const m of text.matchAll(spec)) {
      const target = (m[1] ?? m[2] ?? m[3])!.replace(/\.js$/, '.ts');
      deps.push(relative(src, resolve(dirname(file), target)));
    }
    graph.set(relative(src, file), deps);
  }
  return graph;
}

/** Every cycle found by a depth-first walk, each as the list of files around it. */
function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 'open');
    stack.push(f);
    for (const d of graph.get(f) ?? []) {
      if (state.get(d) === 'open') found.push([...stack.slice(stack.indexOf(d)), d]);
      else if (!state.has(d)) visit(d);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f);
  return found;
}

describe('registry module graph', () => {
  const graph = importGraph(SRC);

  it('reads the whole source tree', () => {
    expect(graph.size).toBeGreaterThan(30);
    expect(graph.get('routes/nodeside.ts')).toContain('services/desired-state.ts');
  });

  it('has no import cycle', () => {
    expect(cycles(graph).map((c) => c.join(' → '))).toEqual([]);
  });

  it('finds a cycle when there is one (the check itself works)', () => {
    const g = new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts']], ['c.ts', ['a.ts']], ['d.ts', ['a.ts']]]);
    expect(cycles(g)).toEqual([['a.ts', 'b.ts', 'c.ts', 'a.ts']]);
  });

  it('keeps the tiers one way: repositories use no service, services use no route or plugin', () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      for (const d of deps) {
        if (file.startsWith('repositories/') && !d.startsWith('repositories/')) wrong.push(`${file} → ${d}`);
        if (file.startsWith('services/') && /^(routes|plugins)\//.test(d)) wrong.push(`${file} → ${d}`);
        if (/^(services|repositories|plugins)\//.test(file) && ['app.ts', 'context.ts', 'index.ts', 'main.ts'].includes(d)) wrong.push(`${file} → ${d}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
