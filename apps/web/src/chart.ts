// Usage plots with uPlot: a sliver's cpu, memory, network and disk over the last 24 hours.
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import type { UsageSample } from '@planetlite/api/browser';
import { bytes, html } from './ui.js';

export interface Series {
  label: string;
  values: Array<number | null>;
}

/** Rates and levels from cumulative samples; a counter that went down means a restart (no point). */
export function usageSeries(samples: UsageSample[]) {
  const t = samples.map((s) => new Date(s.at).getTime() / 1000);
  const rate = (get: (s: UsageSample) => number | null, scale = 1) =>
    samples.map((s, i) => {
      const prev = samples[i - 1];
      const a = prev ? get(prev) : null;
      const b = get(s);
      const dt = i > 0 ? t[i]! - t[i - 1]! : 0;
      return a === null || b === null || dt <= 0 || b < a ? null : ((b - a) / dt) * scale;
    });
  return {
    t,
    cpu: rate((s) => s.cpu_seconds, 100),
    memory: samples.map((s) => s.memory_bytes),
    rx: rate((s) => s.net_rx_bytes),
    tx: rate((s) => s.net_tx_bytes),
    disk: samples.map((s) => s.disk_bytes),
  };
}

const COLORS = ['#2563eb', '#dc2626'];

export function Chart({ title, t, series, unit }: { title: string; t: number[]; series: Series[]; unit: 'percent' | 'bytes' | 'rate' }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const fmt = (v: number | null) => (v === null ? '–' : unit === 'percent' ? `${v.toFixed(1)} %` : unit === 'rate' ? `${bytes(v)}/s` : bytes(v));
    const plot = new uPlot({
      width: Math.max(240, el.clientWidth),
      height: 160,
      legend: { show: series.length > 1 },
      scales: { y: { range: (_u, _min, max) => [0, Math.max(max || 0, unit === 'percent' ? 1 : 1024) * 1.1] } },
      axes: [{}, { values: (_u, ticks) => ticks.map(fmt), size: 70 }],
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, value: (_u: uPlot, v: number | null) => fmt(v) }))],
    }, [t, ...series.map((s) => s.values)], el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(240, el.clientWidth), height: 160 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [t, series]);
  return html`<figure class="chart"><figcaption>${title}</figcaption><div ref=${box} role="img" aria-label=${`${title}, last 24 hours`}></div></figure>`;
}
