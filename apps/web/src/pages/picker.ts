// Picking nodes for new slivers: a table filtered and sorted by site, state, capability, free ports
// and load, or "N nodes at different sites" in one click.
import { useState } from 'preact/hooks';
import type { Node, Slice } from '@planetlite/api/browser';
import { api } from '../api.js';
import { ago, ErrorNote, field, html, SortTable, StateBadge, useAction, type Column } from '../ui.js';

/** Slivers per CPU: the load a researcher compares nodes by. */
export const load = (n: Node) => Math.round(((n.slivers ?? 0) / Math.max(1, n.resources.cpus)) * 100) / 100;
export const caps = (n: Node) => [n.capabilities.lxc ? 'lxc' : '', n.capabilities.kvm ? `kvm${n.capabilities.kvm_accel ? ` (${n.capabilities.kvm_accel})` : ''}` : ''].filter(Boolean).join(', ');
/** Whether a slice's sliver can go there at all. */
const usable = (n: Node, kind: string) => n.admin_state === 'active' && (kind === 'kvm' ? n.capabilities.kvm : n.capabilities.lxc);

/** The n usable online nodes with the most free ports, one per site. */
export function spreadPick(nodes: Node[], n: number, kind: string): string[] {
  const bySite = new Map<string, Node>();
  for (const node of nodes.filter((x) => x.state === 'online' && usable(x, kind)).sort((a, b) => (b.free_ports ?? 0) - (a.free_ports ?? 0) || load(a) - load(b))) {
    if (!bySite.has(node.site)) bySite.set(node.site, node);
  }
  return [...bySite.values()].slice(0, n).map((x) => x.id);
}

export function NodePicker({ slice, nodes, taken, onAdded }: { slice: Slice; nodes: Node[]; taken: Set<string>; onAdded: () => void }) {
  const [picked, setPicked] = useState<Set<string>>(new Set());
  const [state, setState] = useState('online');
  const [cap, setCap] = useState(slice.kind);
  const [spread, setSpread] = useState(3);
  const [failures, setFailures] = useState<Array<{ node: string; error: unknown }>>([]);
  const action = useAction();
  const toggle = (id: string) => setPicked((p) => {
    const next = new Set(p);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    return next;
  });
  const free = nodes.filter((n) => !taken.has(n.id));
  const columns: Column<Node>[] = [
    { key: 'pick', label: 'Pick', value: (n) => (picked.has(n.id) ? 0 : 1), render: (n) => html`<input type="checkbox" aria-label=${`Pick ${n.hostname}`} checked=${picked.has(n.id)} disabled=${!usable(n, slice.kind)} onChange=${() => toggle(n.id)} />` },
    { key: 'hostname', label: 'Node', value: (n) => n.hostname },
    { key: 'site', label: 'Site', value: (n) => n.site },
    { key: 'state', label: 'State', value: (n) => n.state, render: (n) => html`<${StateBadge} state=${n.state} />${n.admin_state !== 'active' ? html` <span class="badge">${n.admin_state}</span>` : null}` },
    { key: 'caps', label: 'Runs', value: caps },
    { key: 'free', label: 'Free ports', value: (n) => n.free_ports ?? 0, numeric: true },
    { key: 'load', label: 'Slivers per CPU', value: load, numeric: true },
    { key: 'seen', label: 'Last seen', value: (n) => n.last_seen ?? '', render: (n) => ago(n.last_seen) },
  ];
  const add = async () => {
    const ids = [...picked];
    const failed: Array<{ node: string; error: unknown }> = [];
    await action.run(async () => {
      for (const id of ids) {
        try {
          await api.createSliver(slice.name, id);
        } catch (error) {
          failed.push({ node: nodes.find((n) => n.id === id)?.hostname ?? id, error });
        }
      }
    });
    setFailures(failed);
    setPicked(new Set());
    onAdded();
  };
  return html`<section aria-labelledby="add-slivers"><h2 id="add-slivers">Add slivers</h2>
    <p class="muted">Pick nodes for <code>${slice.kind}</code> slivers of this slice. Each gets its own ports and ssh command.</p>
    <div class="toolbar">
      <label>State <select value=${state} onChange=${(e: Event) => setState(field(e))}><option value="">any</option><option value="online">online</option><option value="offline">offline</option></select></label>
      <label>Runs <select value=${cap} onChange=${(e: Event) => setCap(field(e) as typeof cap)}><option value="">any</option><option value="lxc">lxc</option><option value="kvm">kvm</option></select></label>
      <span class="spread"><label for="spread-n">Nodes at different sites</label> <input id="spread-n" type="number" min="1" max="100" value=${spread} onInput=${(e: Event) => setSpread(Number(field(e)) || 1)} />
        <button type="button" onClick=${() => setPicked(new Set(spreadPick(free, spread, slice.kind)))}>Pick them</button></span>
    </div>
    <${SortTable} rows=${free} columns=${columns} rowKey=${(n: Node) => n.id} caption="Nodes to add slivers on" filterLabel="Filter nodes"
      initialSort="hostname" extraFilter=${(n: Node) => (!state || n.state === state) && (!cap || (cap === 'kvm' ? n.capabilities.kvm : n.capabilities.lxc))}
      empty=${nodes.length === 0 ? 'No node is enrolled yet: a site PI enrolls one with an enrollment token (My site → Enrollment tokens).' : 'This slice has a sliver on every node already.'} />
    <p><button type="button" class="primary" disabled=${picked.size === 0 || action.busy} onClick=${add}>${action.busy ? 'Adding…' : `Add ${picked.size} sliver${picked.size === 1 ? '' : 's'}`}</button></p>
    ${failures.map((f) => html`<div><strong>${f.node}:</strong> <${ErrorNote} error=${f.error} /></div>`)}
    <${ErrorNote} error=${action.error} />
  </section>`;
}
