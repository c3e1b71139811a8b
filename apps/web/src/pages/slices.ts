// My slices: each with its expiry and members, and the form that creates one.
import { useState } from 'preact/hooks';
import type { Image, Slice, User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { ago, Empty, ErrorNote, field, html, Loading, useAction, useLoad, when } from '../ui.js';

export const EXPIRY_SOON_MS = 3 * 86_400_000;

export function SlicesPage({ me }: { me: User }) {
  const slices = useLoad(() => api.listSlices(), []);
  const canCreate = me.roles.includes('admin') || (me.roles.includes('pi') && me.site);
  return html`<h1>Slices</h1>
    <p class="lead">A slice is your share of the testbed: add slivers on nodes, then <code>ssh</code> into them.</p>
    <${ErrorNote} error=${slices.error} />
    ${slices.loading ? html`<${Loading} />` : null}
    ${slices.data ? (slices.data.length === 0
      ? html`<${Empty}>You are in no slice yet. ${canCreate ? 'Create one below.' : "Ask your site's PI to create one and add you to it."}<//>`
      : html`<ul class="cards">${slices.data.map((s) => html`<${SliceCard} key=${s.name} slice=${s} />`)}</ul>`) : null}
    ${canCreate ? html`<${CreateSlice} me=${me} onCreated=${(s: Slice) => { location.hash = `#/slices/${s.name}`; }} />` : null}`;
}

function SliceCard({ slice: s }: { slice: Slice }) {
  const soon = new Date(s.expires_at).getTime() - Date.now() < EXPIRY_SOON_MS;
  return html`<li class="card">
    <h2><a href=${`#/slices/${encodeURIComponent(s.name)}`}>${s.name}</a></h2>
    <p>${s.description || html`<span class="muted">no description</span>`}</p>
    <dl class="facts">
      <dt>Expires</dt><dd class=${soon ? 'warn' : ''}>${when(s.expires_at)} (${ago(s.expires_at)})</dd>
      <dt>Members</dt><dd>${s.members.map((m) => m.name).join(', ') || 'none'}</dd>
      <dt>Kind</dt><dd>${s.kind}, image ${s.image}</dd>
    </dl>
  </li>`;
}

function CreateSlice({ me, onCreated }: { me: User; onCreated: (s: Slice) => void }) {
  const images = useLoad(() => api.listImages(), []);
  const sites = useLoad(() => (me.roles.includes('admin') ? api.listSites().then((l) => l.map((s) => s.login_base)) : Promise.resolve(me.site ? [me.site] : [])), []);
  const [site, setSite] = useState(me.site ?? '');
  const [suffix, setSuffix] = useState('');
  const [description, setDescription] = useState('');
  const [url, setUrl] = useState('');
  const [kind, setKind] = useState<'lxc' | 'kvm'>('lxc');
  const [image, setImage] = useState('');
  const action = useAction();
  const submit = async (e: Event) => {
    e.preventDefault();
    let made: Slice | undefined;
    const body = { name: `${site}_${suffix}`, description, url, kind, ...(image ? { image } : {}) };
    if (await action.run(async () => (made = await api.createSlice(body)))) onCreated(made!);
  };
  const fitting = (images.data ?? []).filter((i: Image) => i.kinds.includes(kind));
  return html`<section aria-labelledby="create-slice"><h2 id="create-slice">Create a slice</h2>
    <form class="grid" onSubmit=${submit}>
      <p><label for="slice-site">Site</label>
        <select id="slice-site" value=${site} onChange=${(e: Event) => setSite(field(e))}>${(sites.data ?? [site]).map((s) => html`<option value=${s}>${s}</option>`)}</select></p>
      <p><label for="slice-suffix">Name</label>
        <span class="prefixed"><span aria-hidden="true">${site}_</span><input id="slice-suffix" required pattern="[a-z0-9_]{1,30}" aria-describedby="suffix-help" value=${suffix} onInput=${(e: Event) => setSuffix(field(e))} /></span>
        <small id="suffix-help">Lower-case letters, digits and _; the slice is called <code>${site}_${suffix || '…'}</code>, which is also the ssh user.</small></p>
      <p><label for="slice-description">Description</label><textarea id="slice-description" required rows="2" value=${description} onInput=${(e: Event) => setDescription(field(e))}></textarea></p>
      <p><label for="slice-url">Project URL</label><input id="slice-url" type="url" required value=${url} onInput=${(e: Event) => setUrl(field(e))} /></p>
      <p><label for="slice-kind">Sliver kind</label>
        <select id="slice-kind" value=${kind} onChange=${(e: Event) => setKind(field(e) as 'lxc' | 'kvm')}><option value="lxc">LXC container</option><option value="kvm">KVM virtual machine</option></select></p>
      <p><label for="slice-image">Image</label>
        <input id="slice-image" list="slice-images" pattern="[a-z0-9][a-z0-9._-]{0,63}" aria-describedby="image-help" value=${image} onInput=${(e: Event) => setImage(field(e))} />
        <datalist id="slice-images">${fitting.map((i) => html`<option value=${i.name}>${i.version ?? ''}</option>`)}</datalist>
        <small id="image-help">Empty: the registry's default image. ${fitting.length ? `Published for ${kind}: ${fitting.map((i) => i.name).join(', ')}.` : ''}</small></p>
      <${ErrorNote} error=${action.error} />
      <p><button type="submit" class="primary" disabled=${action.busy || !site}>Create slice</button></p>
    </form></section>`;
}
