// One sliver: its state (live), the ssh command, actions, usage over 24 h and a VM's console.
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { Sliver, SliverAction, User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { subscribe } from '../live.js';
import { ago, bytes, ConfirmButton, CopyButton, Empty, ErrorNote, html, Loading, StateBadge, useAction, useLoad } from '../ui.js';
import { sshCommand } from './slice.js';
import { EventList } from './events.js';

const ACTIONS: Array<{ action: SliverAction['action']; help: string }> = [
  { action: 'start', help: 'boot a stopped sliver' },
  { action: 'stop', help: 'shut it down, keeping its files' },
  { action: 'restart', help: 'stop and start again' },
  { action: 'reset', help: 'a fresh copy of the image: its files are lost' },
  { action: 'freeze', help: 'pause every process' },
  { action: 'thaw', help: 'resume a frozen sliver' },
];

export function SliverPage({ id }: { id: string; me: User }) {
  const sliver = useLoad(() => api.getSliver(id), [id]);
  const node = useLoad(() => (sliver.data ? api.getNode(sliver.data.node_id) : Promise.resolve(undefined)), [sliver.data?.node_id]);
  useEffect(() => subscribe((e) => {
    if (e.sliver === id) sliver.reload();
  }), [id]);
  const action = useAction();
  const run = (fn: () => Promise<Sliver>) => action.run(async () => {
    const next = await fn();
    sliver.set(() => next);
  });

  if (sliver.error && !sliver.data) return html`<h1>Sliver</h1><${ErrorNote} error=${sliver.error} /><p><a href="#/slices">Back to your slices</a></p>`;
  if (!sliver.data) return html`<h1>Sliver</h1><${Loading} />`;
  const s = sliver.data;
  const host = node.data?.hostname ?? s.ssh.host;
  return html`<p class="crumbs"><a href="#/slices">Slices</a> › <a href=${`#/slices/${encodeURIComponent(s.slice)}`}>${s.slice}</a> ›</p>
    <h1>Sliver on ${host}</h1>
    <dl class="facts">
      <dt>State</dt><dd><${StateBadge} state=${s.state} /> <span class="muted">(asked: ${s.desired}; changed ${ago(s.updated_at)})</span></dd>
      ${s.error ? html`<dt>Error</dt><dd class="error-text" role="alert">${s.error}</dd>` : null}
      <dt>Kind</dt><dd>${s.kind}</dd>
      <dt>Address</dt><dd>${s.address ?? 'not yet'}</dd>
      <dt>Ports</dt><dd>${s.ports.first}–${s.ports.last} (the first reaches sshd)</dd>
      ${s.usage ? html`<dt>Now</dt><dd>memory ${bytes(s.usage.memory_bytes)}, disk ${bytes(s.usage.disk_bytes)}</dd>` : null}
    </dl>
    <section aria-labelledby="ssh-h"><h2 id="ssh-h">Log in</h2>
      <p class="ssh"><code class="cmd" id="ssh-command">${sshCommand(s)}</code> <${CopyButton} text=${sshCommand(s)} label="Copy ssh command" /></p>
      <p class="muted">Any member's ssh key works, for the user <code>${s.ssh.user}</code> and for root.</p>
    </section>
    <section aria-labelledby="actions-h"><h2 id="actions-h">Actions</h2>
      <div class="toolbar">${ACTIONS.map((a) => html`<button type="button" title=${a.help} disabled=${action.busy || s.state === 'deleting'} onClick=${() => run(() => api.sliverAction(s.id, a.action))}>${a.action}</button>`)}
        <${ConfirmButton} label="Delete" question="Delete this sliver and its files?" disabled=${s.state === 'deleting'} onConfirm=${() => run(() => api.deleteSliver(s.id))} />
      </div>
      <${ErrorNote} error=${action.error} />
    </section>
    <${Usage} id=${s.id} />
    ${s.kind === 'kvm' ? html`<${Console} id=${s.id} />` : null}
    <section aria-labelledby="sev-h"><h2 id="sev-h">Events of this sliver's slice on ${host}</h2><${EventList} query=${{ slice: s.slice, node: s.node_id }} /></section>`;
}

function Usage({ id }: { id: string }) {
  const usage = useLoad(() => api.sliverUsage(id), [id]);
  // uPlot is not part of the first load: it comes when a sliver page is opened.
  const [charts, setCharts] = useState<typeof import('../chart.js') | null>(null);
  useEffect(() => void import('../chart.js').then(setCharts), []);
  const series = useMemo(() => (usage.data && charts ? charts.usageSeries(usage.data.samples) : null), [usage.data, charts]);
  const Chart = charts?.Chart;
  return html`<section aria-labelledby="usage-h"><h2 id="usage-h">Usage, last 24 hours</h2>
    <${ErrorNote} error=${usage.error} />
    ${!series ? (usage.error ? null : html`<${Loading} />`) : series.t.length < 2
      ? html`<${Empty}>No usage yet: the node reports every minute once the sliver runs. Come back in a few minutes.<//>`
      : html`<div class="charts">
        <${Chart} title="CPU" unit="percent" t=${series.t} series=${[{ label: 'cpu %', values: series.cpu }]} />
        <${Chart} title="Memory" unit="bytes" t=${series.t} series=${[{ label: 'memory', values: series.memory }]} />
        <${Chart} title="Network" unit="rate" t=${series.t} series=${[{ label: 'in', values: series.rx }, { label: 'out', values: series.tx }]} />
        <${Chart} title="Disk" unit="bytes" t=${series.t} series=${[{ label: 'disk', values: series.disk }]} />
      </div>`}
  </section>`;
}

function Console({ id }: { id: string }) {
  const log = useLoad(() => api.getSliverConsole(id), [id]);
  const missing = log.error && (log.error as { code?: string }).code === 'not_found';
  return html`<section aria-labelledby="console-h"><h2 id="console-h">Console log</h2>
    ${missing ? html`<${Empty}>The node has not uploaded this VM's console yet; it does while the VM boots.<//>` : html`<${ErrorNote} error=${log.error} />`}
    ${log.data ? html`<pre class="console" tabindex="0">${log.data.text}</pre><button type="button" class="small" onClick=${log.reload}>Refresh</button>` : null}
  </section>`;
}
