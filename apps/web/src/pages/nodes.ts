// Every node the caller may see, with health, live from node events.
import { useEffect } from 'preact/hooks';
import type { Node, User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { subscribe } from '../live.js';
import { ago, ErrorNote, html, Loading, SortTable, StateBadge, useLoad, type Column } from '../ui.js';
import { caps, load } from './picker.js';

/** Reloads the list whenever a node event arrives (online, offline, enrolled, drained…). */
export function useLiveNodes(site?: string) {
  const nodes = useLoad(() => api.listNodes(site ? { site } : {}), [site]);
  useEffect(() => subscribe((e) => {
    if (e.type.startsWith('node.') || e.type === 'image.fetched') nodes.reload();
  }), [site]);
  return nodes;
}

export const nodeColumns = (extra: Column<Node>[] = []): Column<Node>[] => [
  { key: 'hostname', label: 'Node', value: (n) => n.hostname },
  { key: 'site', label: 'Site', value: (n) => n.site },
  { key: 'state', label: 'Health', value: (n) => n.state, render: (n) => html`<${StateBadge} state=${n.state} />${n.admin_state !== 'active' ? html` <span class="badge">${n.admin_state}</span>` : null}` },
  { key: 'seen', label: 'Last seen', value: (n) => n.last_seen ?? '', render: (n) => ago(n.last_seen) },
  { key: 'address', label: 'Address', value: (n) => n.address },
  { key: 'caps', label: 'Runs', value: caps },
  { key: 'slivers', label: 'Slivers', value: (n) => n.slivers ?? 0, numeric: true },
  { key: 'free', label: 'Free ports', value: (n) => n.free_ports ?? 0, numeric: true },
  { key: 'load', label: 'Slivers per CPU', value: load, numeric: true },
  { key: 'images', label: 'Images', value: (n) => n.images.map((i) => i.image).join(' '), render: (n) => n.images.map((i) => html`<span class="badge" title=${`${i.state}; ${i.bytes_from_peers} bytes from peers, ${i.bytes_from_webseed ?? 0} from the registry`}>${i.image}</span> `) },
  ...extra,
];

export function NodesPage(_: { me: User }) {
  const nodes = useLiveNodes();
  return html`<h1>Nodes</h1>
    <p class="lead">Every enrolled node, updated live. Add slivers on them from a slice's page.</p>
    <${ErrorNote} error=${nodes.error} />
    ${nodes.data ? html`<${SortTable} rows=${nodes.data} columns=${nodeColumns()} rowKey=${(n: Node) => n.id} caption="Nodes" filterLabel="Filter nodes"
      empty="No node is enrolled yet. A site's PI or tech makes an enrollment token under My site and runs the command it shows on the machine." />` : nodes.error ? null : html`<${Loading} />`}`;
}
