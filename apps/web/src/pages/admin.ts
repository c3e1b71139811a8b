// The testbed admin's pages: sites and quotas, all nodes, images, the event log with filters, and
// the watchdog's resets with their figures.
import { useEffect, useState } from 'preact/hooks';
import type { Image, Node, Site, User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { bytes, ErrorNote, field, html, Loading, SortTable, useAction, useLoad, when, type Column } from '../ui.js';
import { nodeColumns, useLiveNodes } from './nodes.js';
import { EventList } from './events.js';

const TABS = [['sites', 'Sites'], ['nodes', 'All nodes'], ['images', 'Images'], ['events', 'Event log'], ['watchdog', 'Watchdog resets']] as const;

export function AdminPage({ me, tab }: { me: User; tab: string }) {
  if (!me.roles.includes('admin')) return html`<h1>Admin</h1><p class="error" role="alert">Only a testbed admin may see these pages. <code class="code">forbidden</code></p>`;
  const body = tab === 'nodes' ? html`<${AllNodes} />` : tab === 'images' ? html`<${Images} />` : tab === 'events' ? html`<${EventLog} />`
    : tab === 'watchdog' ? html`<p class="muted">Each reset names the sliver the watchdog chose and the memory figures that made it act.</p><${EventList} query=${{ type: 'watchdog.reset' }} />` : html`<${Sites} />`;
  return html`<h1>Admin: ${TABS.find(([k]) => k === tab)?.[1] ?? 'Sites'}</h1>
    <nav aria-label="Admin"><ul class="tabs">${TABS.map(([k, label]) => html`<li><a href=${`#/admin/${k}`} aria-current=${k === tab ? 'page' : undefined}>${label}</a></li>`)}</ul></nav>
    ${body}`;
}

function Sites() {
  const sites = useLoad(() => api.listSites(), []);
  const [form, setForm] = useState({ login_base: '', name: '', max_slices: 10, max_slivers: 100 });
  const action = useAction();
  const create = async (e: Event) => {
    e.preventDefault();
    if (await action.run(() => api.createSite(form))) sites.reload();
  };
  const setQuota = (s: Site, k: 'max_slices' | 'max_slivers', v: number) => void action.run(() => api.updateSite(s.login_base, { [k]: v })).then(sites.reload);
  const quota = (k: 'max_slices' | 'max_slivers', label: string) => (s: Site) => html`<input type="number" min="0" class="narrow" aria-label=${`${label} of ${s.login_base}`} value=${s[k]} onChange=${(e: Event) => setQuota(s, k, Number(field(e)))} />`;
  const columns: Column<Site>[] = [
    { key: 'lb', label: 'Site', value: (s) => s.login_base, render: (s) => html`<a href=${`#/site/${s.login_base}`}>${s.login_base}</a>` },
    { key: 'name', label: 'Name', value: (s) => s.name },
    { key: 'slices', label: 'Max slices', value: (s) => s.max_slices, render: quota('max_slices', 'Max slices'), numeric: true },
    { key: 'slivers', label: 'Max slivers', value: (s) => s.max_slivers, render: quota('max_slivers', 'Max slivers'), numeric: true },
    { key: 'created', label: 'Since', value: (s) => s.created_at, render: (s) => when(s.created_at) },
  ];
  const set = (k: keyof typeof form, num = false) => (e: Event) => setForm((f) => ({ ...f, [k]: num ? Number(field(e)) : field(e) }));
  return html`<${ErrorNote} error=${sites.error ?? action.error} />
    ${sites.data ? html`<${SortTable} rows=${sites.data} columns=${columns} rowKey=${(s: Site) => s.login_base} caption="Sites" filterLabel="Filter sites" empty="No site yet: create the first below." />` : html`<${Loading} />`}
    <section aria-labelledby="new-site"><h2 id="new-site">Create a site</h2><form class="grid" onSubmit=${create}>
      <p><label for="s-lb">Login base (prefix of its slices)</label><input id="s-lb" required pattern="[a-z][a-z0-9]{1,19}" value=${form.login_base} onInput=${set('login_base')} /></p>
      <p><label for="s-name">Name</label><input id="s-name" required value=${form.name} onInput=${set('name')} /></p>
      <p><label for="s-ms">Max slices</label><input id="s-ms" type="number" min="0" value=${form.max_slices} onInput=${set('max_slices', true)} /></p>
      <p><label for="s-mv">Max slivers</label><input id="s-mv" type="number" min="0" value=${form.max_slivers} onInput=${set('max_slivers', true)} /></p>
      <p><button type="submit" class="primary" disabled=${action.busy}>Create site</button></p>
    </form></section>`;
}

function AllNodes() {
  const nodes = useLiveNodes();
  // The world outline and its drawing are not part of the first load: they come with this page.
  const [map, setMap] = useState<typeof import('../map.js') | null>(null);
  const [mapError, setMapError] = useState<unknown>(null);
  useEffect(() => void import('../map.js').then(setMap, setMapError), []);
  const Map = map?.NodeMap;
  return html`<${ErrorNote} error=${nodes.error ?? mapError} />
    ${nodes.data && Map ? html`<${Map} nodes=${nodes.data} />` : nodes.error || mapError ? null : html`<${Loading} />`}
    ${nodes.data ? html`<${SortTable} rows=${nodes.data} columns=${nodeColumns()} rowKey=${(n: Node) => n.id} caption="All nodes" filterLabel="Filter nodes" empty="No node is enrolled yet." />` : html`<${Loading} />`}`;
}

function Images() {
  const images = useLoad(() => api.listImages(), []);
  const nodes = useLiveNodes();
  const holders = (i: Image) => (nodes.data ?? []).filter((n) => n.images.some((x) => x.image === i.name));
  const columns: Column<Image>[] = [
    { key: 'name', label: 'Image', value: (i) => i.name },
    { key: 'version', label: 'Version', value: (i) => i.version ?? '' },
    { key: 'kinds', label: 'Kinds', value: (i) => i.kinds.join(', ') },
    { key: 'size', label: 'Size', value: (i) => i.size, render: (i) => bytes(i.size), numeric: true },
    { key: 'nodes', label: 'Held by', value: (i) => holders(i).length, render: (i) => holders(i).map((n) => {
      const held = n.images.find((x) => x.image === i.name)!;
      return html`<span class="badge" title=${`${bytes(held.bytes_from_peers)} from peers, ${bytes(held.bytes_from_webseed)} from the registry`}>${n.hostname}: ${held.state}${held.progress !== undefined && held.state !== 'ready' ? ` ${Math.round(held.progress * 100)} %` : ''}</span> `;
    }) },
    { key: 'created', label: 'Published', value: (i) => i.created_at, render: (i) => when(i.created_at) },
  ];
  return html`<${ErrorNote} error=${images.error} />
    ${images.data ? html`<${SortTable} rows=${images.data} columns=${columns} rowKey=${(i: Image) => i.name} caption="Images" empty="No image yet: publish one with planetlite image push." />` : html`<${Loading} />`}`;
}

function EventLog() {
  const [f, setF] = useState({ type: '', slice: '' });
  const [applied, setApplied] = useState({ type: '', slice: '' });
  const query = { ...(applied.type ? { type: applied.type } : {}), ...(applied.slice ? { slice: applied.slice } : {}) };
  return html`<form class="toolbar" onSubmit=${(e: Event) => { e.preventDefault(); setApplied(f); }}>
      <label>Type <input value=${f.type} placeholder="sliver.state" onInput=${(e: Event) => setF({ ...f, type: field(e) })} /></label>
      <label>Slice <input value=${f.slice} onInput=${(e: Event) => setF({ ...f, slice: field(e) })} /></label>
      <button type="submit">Filter</button>
    </form>
    <${EventList} query=${query} />`;
}
