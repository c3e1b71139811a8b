// The dashboard's shell: the session, the hash router and the navigation. Pages live in pages/.
import './style.css';
import 'uplot/dist/uPlot.min.css'; // small; the plotting code itself loads on demand (pages/sliver.ts)
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { User } from '@planetlite/api/browser';
import { api, onSessionEnded } from './api.js';
import { startLive, stopLive } from './live.js';
import { html, Loading } from './ui.js';
import { LoginPage } from './pages/login.js';
import { SlicesPage } from './pages/slices.js';
import { SlicePage } from './pages/slice.js';
import { SliverPage } from './pages/sliver.js';
import { KeysPage } from './pages/keys.js';
import { SitePage } from './pages/site.js';
import { NodesPage } from './pages/nodes.js';
import { AdminPage } from './pages/admin.js';

/** The part of the address after #, split: #/slices/x → ['slices', 'x']. */
function useRoute(): string[] {
  const parse = () => location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const [route, setRoute] = useState(parse);
  useEffect(() => {
    const on = () => setRoute(parse());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

export const isPi = (u: User) => u.roles.includes('pi') || u.roles.includes('tech');

function App() {
  // undefined: still asking who we are; null: logged out.
  const [me, setMe] = useState<User | null | undefined>(undefined);
  const [ended, setEnded] = useState(false);
  const route = useRoute();

  useEffect(() => {
    api.me().then(setMe, () => setMe(null));
    return onSessionEnded(() => {
      stopLive();
      setEnded(true);
      setMe(null);
    });
  }, []);
  useEffect(() => {
    if (me) startLive();
  }, [me]);
  // Each page names itself in the title and gets the focus, for screen readers and keyboards.
  useEffect(() => {
    const h1 = document.querySelector('main h1');
    document.title = `${h1?.textContent ?? 'Dashboard'} · PlanetLite`;
  });

  if (me === undefined) return html`<main id="main"><${Loading} /></main>`;
  if (me === null) {
    return html`<${LoginPage} ended=${ended} onLogin=${(u: User) => { setEnded(false); setMe(u); }} />`;
  }
  const logout = async () => {
    await api.logout().catch(() => undefined);
    stopLive();
    setMe(null);
    location.hash = '#/';
  };
  const [page, arg] = route;
  let body;
  switch (page) {
    case 'slices': body = arg ? html`<${SlicePage} name=${arg} me=${me} />` : html`<${SlicesPage} me=${me} />`; break;
    case 'slivers': body = html`<${SliverPage} id=${arg} me=${me} />`; break;
    case 'keys': body = html`<${KeysPage} me=${me} />`; break;
    case 'nodes': body = html`<${NodesPage} me=${me} />`; break;
    case 'site': body = html`<${SitePage} me=${me} site=${arg ?? me.site} />`; break;
    case 'admin': body = html`<${AdminPage} me=${me} tab=${arg ?? 'sites'} />`; break;
    default: body = html`<${SlicesPage} me=${me} />`;
  }
  const admin = me.roles.includes('admin');
  const current = page ?? 'slices';
  const link = (href: string, label: string, key: string) => html`<li><a href=${href} aria-current=${current === key ? 'page' : undefined}>${label}</a></li>`;
  return html`
    <a class="skip" href="#main" onClick=${(e: Event) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/">PlanetLite</a>
      <nav aria-label="Main">
        <ul>
          ${link('#/slices', 'Slices', 'slices')}
          ${link('#/nodes', 'Nodes', 'nodes')}
          ${link('#/keys', 'SSH keys', 'keys')}
          ${me.site && (isPi(me) || admin) ? link(`#/site/${me.site}`, 'My site', 'site') : null}
          ${admin ? link('#/admin', 'Admin', 'admin') : null}
        </ul>
      </nav>
      <span class="who">${me.name} <span class="muted">(${me.email})</span></span>
      <button type="button" class="small" onClick=${logout}>Log out</button>
    </header>
    <main id="main" tabindex="-1">${body}</main>`;
}

const root = document.getElementById('app')!;
root.textContent = ''; // the "Loading…" placeholder the page shows before this script runs
render(html`<${App} />`, root);
