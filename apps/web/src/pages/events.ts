// An event list that fills in live: the newest events matching a query, newest first.
import { useEffect, useState } from 'preact/hooks';
import type { Event as PlEvent, EventQuery, Node } from '@planetlite/api/browser';
import { api } from '../api.js';
import { noteEventId, subscribe } from '../live.js';
import { Empty, ErrorNote, html, Loading, useLoad, when } from '../ui.js';

const LIMIT = 100;

export function summary(e: PlEvent): string {
  const d = e.data as Record<string, unknown>;
  if (e.type === 'sliver.state') return `${d.from ? `${String(d.from)} → ` : ''}${String(d.state)}${d.error ? `: ${String(d.error)}` : ''}${d.reason ? ` (${String(d.reason)})` : ''}`;
  if (e.type === 'watchdog.reset') return Object.entries(d).filter(([, v]) => typeof v !== 'object').map(([k, v]) => `${k} ${String(v)}`).join(', ');
  return Object.entries(d).filter(([, v]) => v !== null && typeof v !== 'object').map(([k, v]) => `${k}: ${String(v)}`).join(', ');
}

export function EventList({ query, nodes }: { query: Partial<EventQuery>; nodes?: Map<string, Node> }) {
  const key = JSON.stringify(query);
  const loaded = useLoad(() => api.listEvents({ ...query, newest: true, limit: LIMIT }), [key]);
  const [live, setLive] = useState<PlEvent[]>([]);
  useEffect(() => setLive([]), [key]);
  useEffect(() => {
    const last = loaded.data?.at(-1);
    if (last) noteEventId(last.id);
  }, [loaded.data]);
  useEffect(() => subscribe((e) => {
    if ((query.slice && e.slice !== query.slice) || (query.node && e.node !== query.node) || (query.type && e.type !== query.type)) return;
    setLive((l) => [e, ...l].slice(0, LIMIT));
  }), [key]);
  if (loaded.error) return html`<${ErrorNote} error=${loaded.error} />`;
  if (!loaded.data) return html`<${Loading} />`;
  const seen = new Set(live.map((e) => e.id));
  const all = [...live, ...loaded.data.slice().reverse().filter((e) => !seen.has(e.id))];
  if (all.length === 0) return html`<${Empty}>No event yet. Events appear here as they happen: slivers changing state, renewals, nodes coming and going.<//>`;
  return html`<ol class="events" aria-live="polite" aria-relevant="additions">${all.map((e) => html`<li key=${e.id}>
    <time datetime=${e.at}>${when(e.at)}</time>${' '}<code>${e.type}</code>${' '}
    ${e.slice && !query.slice ? html`<a href=${`#/slices/${encodeURIComponent(e.slice)}`}>${e.slice}</a>${' '}` : null}
    ${e.node && nodes?.get(e.node) ? html`<span class="muted">${nodes.get(e.node)!.hostname}</span>${' '}` : null}
    ${e.sliver ? html`<a href=${`#/slivers/${e.sliver}`}>sliver</a>${' '}` : null}
    <span class="summary">${summary(e)}</span></li>`)}</ol>`;
}
