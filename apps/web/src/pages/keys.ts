// The caller's ssh keys: every slice they are a member of lets these keys in.
import { useState } from 'preact/hooks';
import type { SshKey, User } from '@planetlite/api/browser';
import { api } from '../api.js';
import { ConfirmButton, Empty, ErrorNote, field, html, Loading, useAction, useLoad, when } from '../ui.js';

export function KeysPage({ me }: { me: User }) {
  const keys = useLoad(() => api.listKeys(me.id), [me.id]);
  const [key, setKey] = useState('');
  const action = useAction();
  const add = async (e: Event) => {
    e.preventDefault();
    if (await action.run(() => api.addKey(me.id, key.trim()))) {
      setKey('');
      keys.reload();
    }
  };
  return html`<h1>SSH keys</h1>
    <p class="lead">Your public keys open every sliver of the slices you are a member of, a minute or so after you add them.</p>
    <${ErrorNote} error=${keys.error} />
    ${!keys.data ? (keys.error ? null : html`<${Loading} />`) : keys.data.length === 0
      ? html`<${Empty}>You have no key yet, so no sliver will let you in. Paste your public key below (for example the line in <code>~/.ssh/id_ed25519.pub</code>).<//>`
      : html`<ul class="plain keys">${keys.data.map((k: SshKey) => html`<li key=${k.id}>
          <code>${k.fingerprint}</code> <span class="badge">${k.type}</span> ${k.comment} <span class="muted">added ${when(k.created_at)}</span>
          <${ConfirmButton} label="Delete" question=${`Delete the key ${k.comment || k.fingerprint}?`} onConfirm=${() => void action.run(() => api.deleteKey(me.id, k.id)).then(keys.reload)} />
        </li>`)}</ul>`}
    <form onSubmit=${add}>
      <p><label for="new-key">Public key (one OpenSSH line)</label>
      <textarea id="new-key" rows="3" required placeholder="ssh-ed25519 AAAA… you@laptop" value=${key} onInput=${(e: Event) => setKey(field(e))}></textarea></p>
      <${ErrorNote} error=${action.error} />
      <p><button type="submit" class="primary" disabled=${action.busy}>Add key</button></p>
    </form>`;
}
