// Logging in: the registry sets the session cookie; the page never sees the token.
import { useState } from 'preact/hooks';
import type { User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { ErrorNote, field, html, useAction } from '../ui.js';

export function LoginPage({ onLogin, ended }: { onLogin: (u: User) => void; ended: boolean }) {
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const action = useAction();
  const submit = async (e: Event) => {
    e.preventDefault();
    let user: User | undefined;
    if (await action.run(async () => (user = (await api.loginSession(email, password)).user))) onLogin(user!);
  };
  return html`<main id="main" class="login">
    <h1>Log in to PlanetLite</h1>
    ${ended ? html`<p class="notice" role="status">Your session has ended. Log in again to go on.</p>` : null}
    <form onSubmit=${submit}>
      <p><label for="email">Email</label><input id="email" type="email" autocomplete="username" required value=${email} onInput=${(e: Event) => setEmail(field(e))} /></p>
      <p><label for="password">Password</label><input id="password" type="password" autocomplete="current-password" required value=${password} onInput=${(e: Event) => setPassword(field(e))} /></p>
      <${ErrorNote} error=${action.error} />
      <p><button type="submit" class="primary" disabled=${action.busy}>${action.busy ? 'Logging in…' : 'Log in'}</button></p>
    </form>
    <p class="muted">No account? Your site's PI makes one for you (<code>planetlite user create</code>).</p>
  </main>`;
}
