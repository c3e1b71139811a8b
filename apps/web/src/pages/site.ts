// A site, as its PI or tech sees it: quota use, users and roles, slices, enrollment tokens with
// the command to paste on a new node, and its nodes with drain/undrain.
import { useState } from 'preact/hooks';
import type { EnrollmentToken, Node, Role, User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { ago, ConfirmButton, CopyButton, Empty, ErrorNote, field, html, Loading, SortTable, useAction, useLoad, when, type Column } from '../ui.js';
import { nodeColumns, useLiveNodes } from './nodes.js';

/** What a site admin pastes on the new machine, as `planetlite site token` prints it. */
export function enrollCommand(t: EnrollmentToken): string {
  const pin = t.ca_pin ? ` --ca-pin ${t.ca_pin}` : '';
  return `./install-node.sh --registry ${t.registry ?? location.origin} --token ${t.token}${pin} --address NODE_ADDRESS`;
}
export function agentEnrollCommand(t: EnrollmentToken): string {
  const pin = t.ca_pin ? ` --ca-pin ${t.ca_pin}` : '';
  return `planetlite-agent enroll --registry ${t.registry ?? location.origin} --token ${t.token}${pin} --address NODE_ADDRESS --state-dir /var/lib/planetlite-agent`;
}

export function SitePage({ me, site }: { me: User; site: string | null }) {
  if (!site) return html`<h1>My site</h1><${Empty}>You belong to no site.<//>`;
  return html`<${SiteView} me=${me} site=${site} key=${site} />`;
}

function SiteView({ me, site }: { me: User; site: string }) {
  const info = useLoad(() => api.getSite(site), [site]);
  const slices = useLoad(() => api.listSlices({ site }), [site]);
  const nodes = useLiveNodes(site);
  const manage = me.roles.includes('admin') || (me.site === site && (me.roles.includes('pi') || me.roles.includes('tech')));
  return html`<h1>Site ${site}</h1>
    <${ErrorNote} error=${info.error} />
    ${info.data ? html`<p class="lead">${info.data.name}${info.data.enabled ? '' : ' — disabled'}</p>
      <dl class="facts">
        <dt>Slices</dt><dd>${slices.data ? html`<meter min="0" max=${info.data.max_slices} value=${slices.data.length} aria-label="slices used"></meter> ${slices.data.length} of ${info.data.max_slices}` : '…'}</dd>
        <dt>Sliver quota</dt><dd>at most ${info.data.max_slivers} slivers across the site's slices</dd>
      </dl>` : null}
    <section aria-labelledby="site-slices"><h2 id="site-slices">Slices</h2>
      <${ErrorNote} error=${slices.error} />
      ${slices.data ? (slices.data.length === 0 ? html`<${Empty}>No slice yet. Create one on the <a href="#/slices">Slices</a> page.<//>`
        : html`<ul class="plain">${slices.data.map((s) => html`<li><a href=${`#/slices/${encodeURIComponent(s.name)}`}>${s.name}</a> <span class="muted">expires ${ago(s.expires_at)}, ${s.members.length} member${s.members.length === 1 ? '' : 's'}</span></li>`)}</ul>`) : html`<${Loading} />`}
    </section>
    <${SiteUsers} site=${site} manage=${manage && (me.roles.includes('pi') || me.roles.includes('admin'))} />
    ${manage ? html`<${Tokens} site=${site} />` : null}
    <section aria-labelledby="site-nodes"><h2 id="site-nodes">Nodes</h2>
      <${ErrorNote} error=${nodes.error} />
      ${nodes.data ? html`<${SortTable} rows=${nodes.data} rowKey=${(n: Node) => n.id} caption="Nodes of the site" filterLabel="Filter nodes"
        columns=${nodeColumns(manage ? [
          { key: 'where', label: 'Location', value: (n: Node) => n.location?.city ?? '', render: (n: Node) => html`<${LocationEditor} node=${n} onDone=${nodes.reload} />` } as Column<Node>,
          { key: 'do', label: 'Action', value: () => '', render: (n: Node) => html`<${DrainButton} node=${n} onDone=${nodes.reload} />` } as Column<Node>,
        ] : [])}
        empty="No node yet. Make an enrollment token above and run its command on the machine; the node shows up here as soon as it enrolls." />` : html`<${Loading} />`}
    </section>`;
}

/** Where the node stands (the admin's map draws it): set, change or clear. */
function LocationEditor({ node, onDone }: { node: Node; onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [form, setForm] = useState({ city: node.location?.city ?? '', lat: String(node.location?.latitude ?? ''), lon: String(node.location?.longitude ?? '') });
  const action = useAction();
  const id = `loc-${node.id.slice(0, 8)}`;
  const save = async (e: Event) => {
    e.preventDefault();
    const location = { city: form.city.trim(), latitude: Number(form.lat), longitude: Number(form.lon) };
    if (await action.run(() => api.updateNode(node.id, { location }))) {
      setOpen(false);
      onDone();
    }
  };
  const clear = () => void action.run(() => api.updateNode(node.id, { location: null })).then((done) => {
    if (done) {
      setForm({ city: '', lat: '', lon: '' });
      setOpen(false);
      onDone();
    }
  });
  const set = (k: keyof typeof form) => (e: Event) => setForm((f) => ({ ...f, [k]: field(e) }));
  return html`${node.location ? html`<span>${node.location.city}</span> ` : html`<span class="muted">not set</span> `}
    <button type="button" class="small" aria-expanded=${open} aria-controls=${id} onClick=${() => setOpen(!open)}>${node.location ? 'Change' : 'Set'} location<span class="sr-only"> of ${node.hostname}</span></button>
    ${open ? html`<form id=${id} class="location-form" onSubmit=${save} aria-label=${`Location of ${node.hostname}`}>
      <p><label for=${`${id}-city`}>City</label><input id=${`${id}-city`} required maxlength="100" value=${form.city} onInput=${set('city')} /></p>
      <p><label for=${`${id}-lat`}>Latitude (−90 to 90, north positive)</label><input id=${`${id}-lat`} type="number" step="any" min="-90" max="90" required value=${form.lat} onInput=${set('lat')} /></p>
      <p><label for=${`${id}-lon`}>Longitude (−180 to 180, east positive)</label><input id=${`${id}-lon`} type="number" step="any" min="-180" max="180" required value=${form.lon} onInput=${set('lon')} /></p>
      <p><button type="submit" class="primary small" disabled=${action.busy}>Save location</button>
        ${node.location ? html`<button type="button" class="small" disabled=${action.busy} onClick=${clear}>Clear location</button>` : null}</p>
    </form>` : null}
    <${ErrorNote} error=${action.error} />`;
}

function DrainButton({ node, onDone }: { node: Node; onDone: () => void }) {
  const action = useAction();
  const act = (a: 'drain' | 'undrain') => void action.run(() => api.nodeAction(node.id, a)).then(onDone);
  return html`${node.admin_state === 'active' ? html`<button type="button" class="small" onClick=${() => act('drain')} title="No new slivers; running ones stay">Drain</button>`
    : node.admin_state === 'draining' ? html`<button type="button" class="small" onClick=${() => act('undrain')}>Undrain</button>` : null}<${ErrorNote} error=${action.error} />`;
}

function SiteUsers({ site, manage }: { site: string; manage: boolean }) {
  const users = useLoad(() => api.listUsers({ site }), [site]);
  const [form, setForm] = useState({ name: '', email: '', password: '', role: 'user' as Role });
  const action = useAction();
  const add = async (e: Event) => {
    e.preventDefault();
    const { role, ...who } = form;
    const roles: Role[] = role === 'user' ? ['user'] : [role, 'user'];
    if (await action.run(() => api.createUser({ ...who, site, roles }))) {
      setForm({ name: '', email: '', password: '', role: 'user' });
      users.reload();
    }
  };
  const set = (k: keyof typeof form) => (e: Event) => setForm((f) => ({ ...f, [k]: field(e) }));
  return html`<section aria-labelledby="site-users"><h2 id="site-users">Users</h2>
    <${ErrorNote} error=${users.error} />
    ${users.data ? html`<ul class="plain">${users.data.map((u) => html`<li>${u.name} <span class="muted">${u.email}</span> ${u.roles.map((r) => html`<span class="badge">${r}</span> `)}</li>`)}</ul>` : html`<${Loading} />`}
    ${manage ? html`<details><summary>Add a user</summary><form class="grid" onSubmit=${add}>
      <p><label for="u-name">Name</label><input id="u-name" required value=${form.name} onInput=${set('name')} /></p>
      <p><label for="u-email">Email</label><input id="u-email" type="email" required value=${form.email} onInput=${set('email')} /></p>
      <p><label for="u-password">First password (8 or more characters)</label><input id="u-password" type="password" autocomplete="new-password" minlength="8" required value=${form.password} onInput=${set('password')} /></p>
      <p><label for="u-role">Role</label><select id="u-role" value=${form.role} onChange=${set('role')}>
        <option value="user">user: researcher in slices</option><option value="tech">tech: runs the site's nodes</option><option value="pi">pi: creates slices, manages users</option></select></p>
      <${ErrorNote} error=${action.error} />
      <p><button type="submit" class="primary" disabled=${action.busy}>Add user</button></p>
    </form></details>` : null}
  </section>`;
}

function Tokens({ site }: { site: string }) {
  const tokens = useLoad(() => api.listEnrollmentTokens(site), [site]);
  const [made, setMade] = useState<EnrollmentToken | null>(null);
  const action = useAction();
  const make = () => void action.run(async () => {
    setMade(await api.createEnrollmentToken(site, {}));
    tokens.reload();
  });
  return html`<section aria-labelledby="site-tokens"><h2 id="site-tokens">Enrollment tokens</h2>
    <p class="muted">A token lets one machine join the site as a node, once, within a day.</p>
    <button type="button" class="primary" disabled=${action.busy} onClick=${make}>Make an enrollment token</button>
    <${ErrorNote} error=${action.error ?? tokens.error} />
    ${made ? html`<div class="notice" role="status">
      <p>On the new node (Debian 12), as root, in the unpacked release bundle; replace NODE_ADDRESS by the node's public address. The token is shown only now.</p>
      <p><code class="cmd" id="enroll-command">${enrollCommand(made)}</code> <${CopyButton} text=${enrollCommand(made)} label="Copy command" /></p>
      <p>Where <code>planetlite-agent</code> is installed already:</p>
      <p><code class="cmd">${agentEnrollCommand(made)}</code> <${CopyButton} text=${agentEnrollCommand(made)} /></p>
      <p class="muted">Token expires ${when(made.expires_at)}.</p>
    </div>` : null}
    ${tokens.data && tokens.data.length > 0 ? html`<h3>Unused tokens</h3><ul class="plain">${tokens.data.map((t) => html`<li>made ${when(t.created_at)}, expires ${ago(t.expires_at)}
      <${ConfirmButton} label="Revoke" question="Revoke this token?" onConfirm=${() => void action.run(() => api.deleteEnrollmentToken(site, t.id)).then(tokens.reload)} /></li>`)}</ul>` : null}
  </section>`;
}
