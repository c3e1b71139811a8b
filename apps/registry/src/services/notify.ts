// Telling a slice's members what happened to it (pl_mom mailed a slice's owners when it reset
// their sliver): a JSON POST to a webhook, and/or mail through an SMTP relay, from the registry,
// which knows the members' addresses. The outcome is recorded as a `slice.notified` event, also
// when no way to notify is configured, so an admin can see who was told what.
import nodemailer, { type Transporter } from 'nodemailer';
import type { Event } from '@planetlite/api';
import { membersToNotify } from '../repositories/users.js';
import { withChanges, type ChangeDeps } from './changes.js';

/** Events the members of the slice hear about. */
export const NOTIFIED_EVENTS = new Set(['watchdog.reset', 'sliver.frozen']);

export interface NotifyConfig {
  /** POST every notification as JSON here; null: no webhook. */
  webhookUrl: string | null;
  /** smtp://[user:pass@]host:port (smtps:// for TLS); null: no mail. */
  smtpUrl: string | null;
  mailFrom: string;
}

/** What the notifier uses: the database and fan-out (to record what it did), and its config. */
export type NotifierDeps = ChangeDeps & { config: { notify: NotifyConfig } };

type Outcome = 'sent' | 'not configured' | 'no recipients' | `failed: ${string}`;

export class Notifier {
  readonly #deps: NotifierDeps;
  readonly #mail: Transporter | null;
  readonly #pending = new Set<Promise<void>>();

  constructor(deps: NotifierDeps) {
    this.#deps = deps;
    const { smtpUrl } = deps.config.notify;
    this.#mail = smtpUrl ? nodemailer.createTransport(smtpUrl) : null;
  }

  /** Notifies about each event that calls for it, in the background; never throws. */
  after(events: Event[]): void {
    for (const ev of events) {
      if (!NOTIFIED_EVENTS.has(ev.type) || !ev.slice) continue;
      const job = this.#notify(ev).catch((err: unknown) => this.#deps.log.error({ err, event: ev.id }, 'notifying a slice failed'));
      this.#pending.add(job);
      void job.finally(() => this.#pending.delete(job));
    }
  }

  /** Waits for notifications under way (registry shutdown, tests). */
  async settled(): Promise<void> {
    while (this.#pending.size) await Promise.all([...this.#pending]);
  }

  close(): void {
    this.#mail?.close();
  }

  async #notify(ev: Event): Promise<void> {
    const { db, config } = this.#deps;
    const recipients = (await membersToNotify(db, ev.slice!)).map((r) => r.email);
    const { subject, text } = message(ev);
    const payload = { event: ev, slice: ev.slice, recipients, subject, text };
    const webhook: Outcome = !config.notify.webhookUrl ? 'not configured' : await this.#post(config.notify.webhookUrl, payload);
    const mail: Outcome = !this.#mail ? 'not configured' : !recipients.length ? 'no recipients' : await this.#send(recipients, subject, text);
    await withChanges(this.#deps, (q, changes) =>
      changes.record(q, { type: 'slice.notified', slice: ev.slice, node: ev.node, sliver: ev.sliver, data: { about: ev.id, about_type: ev.type, recipients, webhook, mail } }),
    );
  }

  async #post(url: string, payload: object): Promise<Outcome> {
    try {
      const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payload), signal: AbortSignal.timeout(10_000) });
      return res.ok ? 'sent' : `failed: HTTP ${res.status}`;
    } catch (err) {
      return `failed: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  async #send(to: string[], subject: string, text: string): Promise<Outcome> {
    try {
      await this.#mail!.sendMail({ from: this.#deps.config.notify.mailFrom, to, subject, text });
      return 'sent';
    } catch (err) {
      return `failed: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
}

const mib = (n: unknown) => (typeof n === 'number' ? `${Math.round(n / 1048576)} MiB` : '?');

/** The human-readable notice. */
export function message(ev: Event): { subject: string; text: string } {
  const d = ev.data as Record<string, unknown>;
  if (ev.type === 'sliver.frozen') {
    return {
      subject: `[PlanetLite] ${ev.slice}: your sliver was frozen by the memory watchdog`,
      text: [
        `The memory watchdog of node ${ev.node} froze the sliver ${ev.sliver} of slice ${ev.slice} at ${ev.at}:`,
        `${String(d.reason ?? 'the node was short of memory')}.`,
        `Its processes are paused, not killed. It is thawed once the node's memory pressure is below ${String(d.thaw_psi_some)}%,`,
        `and reset if it is still frozen after ${String(d.freeze_timeout_seconds)} s. A thaw action (planetlite sliver thaw) lets it run at once.`,
        '',
        `Figures: node memory pressure ${String(d.node_psi_some_avg10)}% (PSI some avg10), this sliver's own ${String(d.sliver_psi_some_avg10)}%.`,
        '',
        'A sliver stalls on memory when it works on more than its memory limit (memory_mb): use less, or ask your site PI for more.',
        `The event is ${ev.id} in GET /v1/events?slice=${ev.slice}.`,
      ].join('\n'),
    };
  }
  if (ev.type === 'watchdog.reset' && d.level === 'pressure') {
    return {
      subject: `[PlanetLite] ${ev.slice}: your sliver was reset by the memory watchdog`,
      text: [
        `The memory watchdog of node ${ev.node} reset the sliver ${ev.sliver} of slice ${ev.slice} at ${ev.at}:`,
        `${String(d.reason)}.`,
        `The sliver was killed and ${d.action === 'restore' ? 'restored from a fresh copy of its image' : 'restarted'}.`,
        '',
        `Figures: node memory pressure ${String(d.node_psi_some_avg10)}% (PSI some avg10), this sliver's own ${String(d.sliver_psi_some_avg10)}%.`,
        `The event is ${ev.id} in GET /v1/events?slice=${ev.slice}.`,
      ].join('\n'),
    };
  }
  if (ev.type === 'watchdog.reset') {
    const action = d.action === 'restore' ? 'restored from a fresh copy of its image' : 'restarted';
    return {
      subject: `[PlanetLite] ${ev.slice}: your sliver was reset by the memory watchdog`,
      text: [
        `The memory watchdog of node ${ev.node} reset the sliver ${ev.sliver} of slice ${ev.slice} at ${ev.at}:`,
        `it was using ${mib(d.memory_bytes)}, the most of any sliver on the node, when ${String(d.reason ?? 'memory ran short')}.`,
        `The sliver was killed and ${action}.`,
        '',
        `Figures: ${d.mode === 'budget' ? 'sliver memory' : 'node memory'} ${mib(d.used_bytes)} of ${mib(d.limit_bytes)} (${String(d.used_percent)}%),`,
        `warning level ${String(d.warn_percent)}%, reset level ${String(d.reset_percent)}%.`,
        '',
        'To keep this from happening again, use less memory, or ask your site PI for a larger memory_mb.',
        `The event is ${ev.id} in GET /v1/events?slice=${ev.slice}.`,
      ].join('\n'),
    };
  }
  return { subject: `[PlanetLite] ${ev.slice}: ${ev.type}`, text: JSON.stringify(ev, null, 2) };
}
