// Small shared pieces of the dashboard: templates, errors, empty states, copy and confirm buttons,
// a sortable table, and the hook that loads data from the API.
import { h, type ComponentChildren, type VNode } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';
import { call, describe } from './api.js';

export const html = htm.bind(h) as (strings: TemplateStringsArray, ...values: unknown[]) => VNode;

/** An API error in words, with its stable code. */
export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const { text, code } = describe(error);
  return html`<p class="error" role="alert">${text}${code ? html` <code class="code">${code}</code>` : null}</p>`;
}

/** What an empty list means, and what to do next. */
export function Empty({ children }: { children: ComponentChildren }) {
  return html`<div class="empty">${children}</div>`;
}

export function Loading() {
  return html`<p class="muted" aria-busy="true">Loading…</p>`;
}

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  set: (fn: (old: T | undefined) => T | undefined) => void;
}

/** Loads fn() now and whenever deps change; reload() loads again without blanking the view. */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data: T | undefined; error: unknown; loading: boolean }>({ data: undefined, error: null, loading: true });
  const seq = useRef(0);
  const load = useCallback(() => {
    const mine = ++seq.current;
    call(fn).then(
      (data) => mine === seq.current && setState({ data, error: null, loading: false }),
      (error: unknown) => mine === seq.current && setState((s) => ({ data: s.data, error, loading: false })),
    );
  }, deps);
  useEffect(() => {
    setState({ data: undefined, error: null, loading: true });
    load();
  }, [load]);
  const set = useCallback((f: (old: T | undefined) => T | undefined) => setState((s) => ({ ...s, data: f(s.data) })), []);
  return { ...state, reload: load, set };
}

/** Runs one action (a button's), remembering its error and whether it is under way. */
export function useAction(): { busy: boolean; error: unknown; run: (fn: () => Promise<unknown>) => Promise<boolean>; clear: () => void } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async (fn: () => Promise<unknown>) => {
    setBusy(true);
    setError(null);
    try {
      await call(fn);
      return true;
    } catch (err) {
      setError(err);
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, clear: () => setError(null) };
}

export function CopyButton({ text, label = 'Copy' }: { text: string; label?: string }) {
  const [done, setDone] = useState('');
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
      setDone('Copied');
    } catch {
      setDone('Copy failed: select the text and press Ctrl+C');
    }
    setTimeout(() => setDone(''), 2500);
  };
  return html`<button type="button" class="small" onClick=${copy}>${label}</button><span class="muted" role="status" aria-live="polite">${done}</span>`;
}

/** A dangerous action asks once more, in the page (keyboard friendly, no window.confirm). */
export function ConfirmButton({ label, question, onConfirm, disabled }: { label: string; question: string; onConfirm: () => void; disabled?: boolean }) {
  const [asking, setAsking] = useState(false);
  if (!asking) return html`<button type="button" class="danger" disabled=${disabled} onClick=${() => setAsking(true)}>${label}</button>`;
  return html`<span class="confirm" role="group" aria-label=${question}>
    <span>${question}</span>
    <button type="button" class="danger" ref=${(el: HTMLButtonElement | null) => el?.focus()} onClick=${() => { setAsking(false); onConfirm(); }}>Yes, ${label.toLowerCase()}</button>
    <button type="button" onClick=${() => setAsking(false)}>Cancel</button>
  </span>`;
}

export interface Column<T> {
  key: string;
  label: string;
  /** The value sorted and filtered on. */
  value: (row: T) => string | number;
  render?: (row: T) => unknown;
  numeric?: boolean;
}

/** A table that sorts by any column (click or Enter on its header) and filters by text. */
export function SortTable<T>({ rows, columns, rowKey, caption, filterLabel, initialSort, extraFilter, empty, className }: {
  rows: T[];
  columns: Column<T>[];
  rowKey: (row: T) => string;
  caption: string;
  filterLabel?: string;
  initialSort?: string;
  extraFilter?: (row: T) => boolean;
  empty?: ComponentChildren;
  className?: string;
}) {
  const [sort, setSort] = useState<{ key: string; dir: 1 | -1 }>({ key: initialSort ?? columns[0]!.key, dir: 1 });
  const [filter, setFilter] = useState('');
  const col = columns.find((c) => c.key === sort.key) ?? columns[0]!;
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = rows
    .filter((r) => (extraFilter ? extraFilter(r) : true))
    .filter((r) => words.every((w) => columns.some((c) => String(c.value(r)).toLowerCase().includes(w))))
    .sort((a, b) => {
      const x = col.value(a);
      const y = col.value(b);
      return (typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))) * sort.dir;
    });
  const filterId = `filter-${caption.replace(/\W+/g, '-').toLowerCase()}`;
  return html`<div class=${`table-wrap ${className ?? ''}`}>
    ${filterLabel ? html`<p class="filter"><label for=${filterId}>${filterLabel}</label> <input id=${filterId} type="search" value=${filter} onInput=${(e: Event) => setFilter((e.target as HTMLInputElement).value)} /></p>` : null}
    <table>
      <caption class="sr-only">${caption}</caption>
      <thead><tr>${columns.map((c) => html`<th scope="col" aria-sort=${c.key === sort.key ? (sort.dir === 1 ? 'ascending' : 'descending') : 'none'} class=${c.numeric ? 'num' : ''}>
        <button type="button" class="sort" onClick=${() => setSort((s) => ({ key: c.key, dir: s.key === c.key ? (s.dir === 1 ? -1 : 1) : 1 }))}>${c.label}${c.key === sort.key ? (sort.dir === 1 ? ' ▲' : ' ▼') : ''}</button>
      </th>`)}</tr></thead>
      <tbody>${shown.map((r) => html`<tr key=${rowKey(r)}>${columns.map((c) => html`<td data-label=${c.label} class=${c.numeric ? 'num' : ''}>${c.render ? c.render(r) : c.value(r)}</td>`)}</tr>`)}</tbody>
    </table>
    ${shown.length === 0 ? html`<${Empty}>${rows.length === 0 ? empty ?? 'Nothing here yet.' : 'Nothing matches the filter; clear it to see all.'}<//>` : null}
  </div>`;
}

export function StateBadge({ state }: { state: string }) {
  return html`<span class=${`badge state-${state}`}>${state}</span>`;
}

// ---- formatting ----------------------------------------------------------------------------

export function when(iso: string | null | undefined): string {
  if (!iso) return 'never';
  const d = new Date(iso);
  return d.toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
}

export function ago(iso: string | null | undefined): string {
  if (!iso) return 'never';
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  const future = s < 0;
  const a = Math.abs(s);
  const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} days`;
  return future ? `in ${text}` : `${text} ago`;
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function field(e: Event): string {
  return (e.target as HTMLInputElement).value;
}
