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

export interface ChartSeries {
  label: string;
  color: string;
  points: Array<[x: number, y: number]>;
}

/** A horizontal line across the chart (a target, a floor), dashed. */
export interface ChartLine {
  label: string;
  color: string;
  y: number;
}

/**
 * A line chart as a standalone SVG (no library, no script): series of points over a shared
 * x axis, from 0, each x that a point has labelled under the axis; lines for targets.
 */
export function lineChart(c: { title: string; xLabel: string; yLabel: string; series: ChartSeries[]; lines?: ChartLine[]; minY?: number }): string {
  const W = 640, H = 360, L = 60, R = 20, T = 30, Bm = 50;
  const xs = [...new Set(c.series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const maxX = Math.max(1, ...xs) * 1.05;
  const maxY = Math.max(c.minY ?? 0, ...c.series.flatMap((s) => s.points.map((p) => p[1])), ...(c.lines ?? []).map((l) => l.y)) * 1.1 || 1;
  const x = (v: number) => L + (v / maxX) * (W - L - R);
  const y = (v: number) => H - Bm - (v / maxY) * (H - T - Bm);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle">${c.title}</text>`,
    `<line x1="${L}" y1="${H - Bm}" x2="${W - R}" y2="${H - Bm}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - Bm}" stroke="black"/>`,
    `<text x="${W / 2}" y="${H - 12}" text-anchor="middle">${c.xLabel}</text>`,
    `<text x="14" y="${(H - Bm + T) / 2}" transform="rotate(-90 14 ${(H - Bm + T) / 2})" text-anchor="middle">${c.yLabel}</text>`,
  ];
  for (let i = 0; i <= 4; i++) out.push(`<text x="${L - 6}" y="${y((maxY / 4) * i) + 4}" text-anchor="end">${((maxY / 4) * i).toFixed(0)}</text>`);
  // At most 12 x labels, evenly picked.
  const step = Math.max(1, Math.ceil(xs.length / 12));
  xs.forEach((v, i) => { if (i % step === 0) out.push(`<text x="${x(v).toFixed(1)}" y="${H - Bm + 16}" text-anchor="middle">${v}</text>`); });
  // Labels of lines alternate right and left, so that two close lines keep both readable.
  (c.lines ?? []).forEach((l, i) => {
    const [lx, anchor] = i % 2 === 0 ? [W - R, 'end'] : [L + 6, 'start'];
    out.push(`<line x1="${L}" y1="${y(l.y).toFixed(1)}" x2="${W - R}" y2="${y(l.y).toFixed(1)}" stroke="${l.color}" stroke-dasharray="4 3"/><text x="${lx}" y="${(y(l.y) - 4).toFixed(1)}" text-anchor="${anchor}" fill="${l.color}">${l.label}</text>`);
  });
  c.series.forEach((s, si) => {
    out.push(`<polyline points="${s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    for (const p of s.points) out.push(`<circle cx="${x(p[0]).toFixed(1)}" cy="${y(p[1]).toFixed(1)}" r="3" fill="${s.color}"/>`);
    out.push(`<text x="${L + 10 + si * 90}" y="${T + 12}" fill="${s.color}">${s.label}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
