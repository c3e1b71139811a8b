// One slice: expiry and renewal, members, its slivers (live), adding slivers, and its events.
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { Event as PlEvent, Node, Slice, Sliver, User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { subscribe } from '../live.js';
import { ago, ConfirmButton, CopyButton, Empty, ErrorNote, field, html, Loading, SortTable, StateBadge, useAction, useLoad, when, type Column } from '../ui.js';
import { NodePicker } from './picker.js';
import { EventList } from './events.js';

const RENEW_RULE = 'A renewal reaches at most 8 weeks (56 days) from today, and only a slice with a description and a project URL may be renewed; an admin may renew further.';

export const sshCommand = (s: Sliver) => `ssh -p ${s.ssh.port} ${s.ssh.user}@${s.ssh.host}`;

/** Applies a sliver.state event to a list of slivers; false when the list must be loaded again. */
export function applySliverEvent(list: Sliver[], e: PlEvent): Sliver[] | null {
  const data = e.data as { state?: string; error?: string | null };
  const i = list.findIndex((s) => s.id === e.sliver);
  if (i < 0) return null;
  if (data.state === 'deleted') return list.filter((s) => s.id !== e.sliver);
  const next = list.slice();
  next[i] = { ...list[i]!, state: (data.state ?? list[i]!.state) as Sliver['state'], error: data.error === undefined ? list[i]!.error : data.error, updated_at: e.at };
  return next;
}

export function SlicePage({ name, me }: { name: string; me: User }) {
  const slice = useLoad(() => api.getSlice(name), [name]);
  const slivers = useLoad(() => api.listSlivers(name), [name]);
  const nodes = useLoad(() => api.listNodes(), [name]);
  const nodeById = useMemo(() => new Map((nodes.data ?? []).map((n) => [n.id, n])), [nodes.data]);

  // Slivers change state in place as the agents report; a sliver we do not know means a reload.
  useEffect(() => subscribe((e) => {
    if (e.slice !== name) return;
    if (e.type === 'sliver.state' && e.sliver) {
      let missing = false;
      slivers.set((old) => {
        const next = old ? applySliverEvent(old, e) : null;
        if (!next) missing = true;
        return next ?? old;
      });
      if (missing) slivers.reload();
    } else if (e.type.startsWith('slice.')) slice.reload();
  }), [name]);

  if (slice.error && !slice.data) {
    return html`<h1>Slice ${name}</h1><${ErrorNote} error=${slice.error} /><p><a href="#/slices">Back to your slices</a></p>`;
  }
  if (!slice.data) return html`<h1>Slice ${name}</h1><${Loading} />`;
  const s = slice.data;
  const manage = me.roles.includes('admin') || (me.roles.includes('pi') && me.site === s.site);
  return html`<p class="crumbs"><a href="#/slices">Slices</a> ›</p>
    <h1>Slice ${s.name}</h1>
    ${s.state === 'deleting' ? html`<p class="notice" role="status">This slice is being deleted: its slivers are torn down.</p>` : null}
    <p>${s.description} ${s.url ? html`· <a href=${s.url} rel="noopener noreferrer">${s.url}</a>` : null}</p>
    <div class="columns">
      <${Renewal} slice=${s} onRenewed=${(n: Slice) => slice.set(() => n)} />
      <${Members} slice=${s} manage=${manage} onChanged=${(n: Slice) => slice.set(() => n)} />
    </div>
    <section aria-labelledby="slivers-h"><h2 id="slivers-h">Slivers</h2>
      <${ErrorNote} error=${slivers.error} />
      ${slivers.data ? html`<${SliverTable} slivers=${slivers.data} nodes=${nodeById} />` : html`<${Loading} />`}
    </section>
    ${s.state === 'active' && nodes.data && slivers.data
      ? html`<${NodePicker} slice=${s} nodes=${nodes.data} taken=${new Set(slivers.data.map((x) => x.node_id))} onAdded=${() => { slivers.reload(); nodes.reload(); }} />`
      : html`<${ErrorNote} error=${nodes.error} />`}
    <section aria-labelledby="events-h"><h2 id="events-h">Events</h2><${EventList} query=${{ slice: name }} nodes=${nodeById} /></section>
    ${manage && s.state === 'active' ? html`<${DeleteSlice} slice=${s} />` : null}`;
}

function SliverTable({ slivers, nodes }: { slivers: Sliver[]; nodes: Map<string, Node> }) {
  const host = (s: Sliver) => nodes.get(s.node_id)?.hostname ?? s.ssh.host;
  const columns: Column<Sliver>[] = [
    { key: 'node', label: 'Node', value: host, render: (s) => html`<a href=${`#/slivers/${s.id}`}>${host(s)}</a>` },
    { key: 'state', label: 'State', value: (s) => s.state, render: (s) => html`<${StateBadge} state=${s.state} />${s.error ? html` <span class="error-text">${s.error}</span>` : null}` },
    { key: 'ssh', label: 'SSH', value: sshCommand, render: (s) => html`<code class="cmd">${sshCommand(s)}</code> <${CopyButton} text=${sshCommand(s)} label="Copy" />` },
    { key: 'updated', label: 'Changed', value: (s) => s.updated_at, render: (s) => ago(s.updated_at) },
  ];
  if (slivers.length === 0) return html`<${Empty}>This slice has no sliver yet. Pick nodes under <a href="#add-slivers">Add slivers</a>.<//>`;
  return html`<${SortTable} rows=${slivers} columns=${columns} rowKey=${(s: Sliver) => s.id} caption="Slivers of this slice" className="sliver-table" filterLabel=${slivers.length > 5 ? 'Filter slivers' : undefined} />`;
}

function Renewal({ slice, onRenewed }: { slice: Slice; onRenewed: (s: Slice) => void }) {
  const eightWeeks = new Date(Date.now() + 56 * 86_400_000 - 3_600_000).toISOString().slice(0, 10);
  const [date, setDate] = useState(eightWeeks);
  const action = useAction();
  const renew = async (e: Event) => {
    e.preventDefault();
    let renewed: Slice | undefined;
    // The end of the chosen day, but never past 8 weeks from now.
    const at = Math.min(new Date(`${date}T23:59:00Z`).getTime(), Date.now() + 56 * 86_400_000 - 60_000);
    if (await action.run(async () => (renewed = await api.renewSlice(slice.name, new Date(at).toISOString())))) onRenewed(renewed!);
  };
  const refused = action.error && (action.error as { code?: string }).code === 'renewal_refused';
  return html`<section aria-labelledby="renew-h"><h2 id="renew-h">Expiry</h2>
    <p>Expires <strong>${when(slice.expires_at)}</strong> (${ago(slice.expires_at)}). Its slivers are deleted then.</p>
    <form class="inline" onSubmit=${renew}>
      <label for="renew-date">Renew until</label> <input id="renew-date" type="date" value=${date} onInput=${(e: Event) => setDate(field(e))} aria-describedby="renew-rule" />
      <button type="submit" disabled=${action.busy || slice.state !== 'active'}>Renew</button>
    </form>
    <${ErrorNote} error=${action.error} />
    <p id="renew-rule" class=${refused ? 'notice' : 'muted'}>${RENEW_RULE}</p>
  </section>`;
}

function Members({ slice, manage, onChanged }: { slice: Slice; manage: boolean; onChanged: (s: Slice) => void }) {
  const users = useLoad(() => (manage ? api.listUsers({ site: slice.site }) : Promise.resolve([] as User[])), [slice.site, manage]);
  const [pick, setPick] = useState('');
  const action = useAction();
  const change = (fn: () => Promise<Slice>) => action.run(async () => onChanged(await fn()));
  const others = (users.data ?? []).filter((u) => !slice.members.some((m) => m.id === u.id));
  return html`<section aria-labelledby="members-h"><h2 id="members-h">Members</h2>
    ${slice.members.length === 0 ? html`<${Empty}>No member yet.${manage ? ' Add one below.' : ''}<//>` : html`<ul class="plain">${slice.members.map((m) => html`<li>${m.name} <span class="muted">${m.email}</span>
      ${manage ? html` <${ConfirmButton} label="Remove" question=${`Remove ${m.name} from the slice?`} onConfirm=${() => change(() => api.removeMember(slice.name, m.id))} />` : null}</li>`)}</ul>`}
    ${manage ? html`<form class="inline" onSubmit=${(e: Event) => { e.preventDefault(); if (pick) void change(() => api.addMember(slice.name, pick)); }}>
      <label for="member-pick">Add a user of ${slice.site}</label>
      <select id="member-pick" value=${pick} onChange=${(e: Event) => setPick(field(e))}><option value="">choose…</option>${others.map((u) => html`<option value=${u.id}>${u.name} (${u.email})</option>`)}</select>
      <button type="submit" disabled=${!pick || action.busy}>Add member</button></form>` : null}
    <${ErrorNote} error=${action.error ?? users.error} />
  </section>`;
}

function DeleteSlice({ slice }: { slice: Slice }) {
  const action = useAction();
  return html`<section aria-labelledby="delete-h" class="danger-zone"><h2 id="delete-h">Delete the slice</h2>
    <p>Every sliver of <code>${slice.name}</code> is torn down and its files are lost.</p>
    <${ConfirmButton} label="Delete slice" question=${`Delete ${slice.name} and all its slivers?`} onConfirm=${() => void action.run(() => api.deleteSlice(slice.name)).then((ok) => { if (ok) location.hash = '#/slices'; })} />
    <${ErrorNote} error=${action.error} />
  </section>`;
}
