// Slice members hear of a watchdog reset: a JSON POST to the configured webhook and mail through
// the configured SMTP relay (a real SMTP server on loopback), and the outcome is recorded as a
// slice.notified event, also when nothing is configured or a channel fails.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SMTPServer } from 'smtp-server';
import { ok, makeWorld, testApp, type TestApp, type World } from './helpers.js';
import { loadConfig, ConfigError } from '../src/index.js';

interface Mail {
  from: string;
  to: string[];
  body: string;
}

const mails: Mail[] = [];
const hooks: Array<{ status: number; body: Record<string, unknown> }> = [];
let hookStatus = 200;
let smtp: SMTPServer;
let web: Server;
let smtpPort = 0;
let webPort = 0;

beforeAll(async () => {
  smtp = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    onData(stream, session, done) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        mails.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '', to: session.envelope.rcptTo.map((r) => r.address), body: Buffer.concat(chunks).toString('utf8') });
        done();
      });
    },
  });
  await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', () => resolve()));
  smtpPort = (smtp.server.address() as AddressInfo).port;
  web = createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString('utf8')));
    req.on('end', () => {
      hooks.push({ status: hookStatus, body: JSON.parse(text) as Record<string, unknown> });
      res.writeHead(hookStatus).end();
    });
  });
  await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', () => resolve()));
  webPort = (web.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => smtp.close(() => resolve()));
  await new Promise<void>((resolve) => web.close(() => resolve()));
});

const resetEvent = (sliver: string) => ({
  type: 'watchdog.reset',
  sliver,
  data: { mode: 'budget', used_bytes: 200 << 20, limit_bytes: 256 << 20, used_percent: 78.1, warn_percent: 40, reset_percent: 70, memory_bytes: 190 << 20, action: 'restart', reason: 'sliver memory at 78.1% ≥ 70%' },
});

async function notified(t: TestApp, w: World, about: number): Promise<Record<string, unknown>> {
  for (let i = 0; i < 100; i++) {
    const evs = (await ok(t.app, 200, 'GET', `/v1/events?type=slice.notified&slice=${w.slice}`, w.admin)).events as Array<{ data: Record<string, unknown> }>;
    const hit = evs.find((e) => e.data.about === about);
    if (hit) return hit.data;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no slice.notified event about event ${about}`);
}

describe('notifying slice members of a watchdog reset', () => {
  it('posts to the webhook and mails every member through the SMTP relay, and records that', async () => {
    const t = await testApp({ config: { notify: { webhookUrl: `http://127.0.0.1:${webPort}/hook`, smtpUrl: `smtp://127.0.0.1:${smtpPort}`, mailFrom: 'PlanetLite <watchdog@planetlite.test>' } } });
    try {
      const w = await makeWorld(t.app);
      const ev = await ok(t.app, 201, 'POST', `/v1/nodes/${w.ids.node}/events`, w.node, resetEvent(w.ids.sliver));
      const data = await notified(t, w, ev.id as number);
      const members = [`pi${w.site.slice(5)}@${w.site}.test`, `user${w.site.slice(5)}@${w.site}.test`].sort();
      expect(data).toMatchObject({ about_type: 'watchdog.reset', webhook: 'sent', mail: 'sent', recipients: members });

      const hook = hooks.at(-1)!;
      expect(hook.body).toMatchObject({ slice: w.slice, recipients: members, event: { id: ev.id, type: 'watchdog.reset', sliver: w.ids.sliver } });
      const mail = mails.at(-1)!;
      expect(mail.from).toBe('watchdog@planetlite.test');
      expect(mail.to.sort()).toEqual(members);
      // Unfold long header lines and quoted-printable soft breaks before reading the message.
      mail.body = mail.body.replace(/\r\n[ \t]+/g, ' ').replace(/=\r\n/g, '');
      expect(mail.body).toContain(`Subject: [PlanetLite] ${w.slice}: your sliver was reset by the memory watchdog`);
      expect(mail.body).toMatch(/190 MiB/);
      expect(mail.body).toContain('restarted');

      // A warning concerns the node, not a slice's members: nobody is told.
      const before = hooks.length;
      await ok(t.app, 201, 'POST', `/v1/nodes/${w.ids.node}/events`, w.node, { type: 'watchdog.warning', data: { used_percent: 50 } });
      await new Promise((r) => setTimeout(r, 300));
      expect(hooks.length).toBe(before);
    } finally {
      await t.close();
    }
  });

  it('records a failing webhook, and that nothing is configured', async () => {
    hookStatus = 500;
    const t = await testApp({ config: { notify: { webhookUrl: `http://127.0.0.1:${webPort}/hook`, smtpUrl: null, mailFrom: 'x@planetlite.test' } } });
    try {
      const w = await makeWorld(t.app);
      const ev = await ok(t.app, 201, 'POST', `/v1/nodes/${w.ids.node}/events`, w.node, resetEvent(w.ids.sliver));
      expect(await notified(t, w, ev.id as number)).toMatchObject({ webhook: 'failed: HTTP 500', mail: 'not configured' });
    } finally {
      hookStatus = 200;
      await t.close();
    }
    const bare = await testApp({ config: { notify: { webhookUrl: null, smtpUrl: null, mailFrom: 'x@planetlite.test' } } });
    try {
      const w = await makeWorld(bare.app);
      const ev = await ok(bare.app, 201, 'POST', `/v1/nodes/${w.ids.node}/events`, w.node, resetEvent(w.ids.sliver));
      expect(await notified(bare, w, ev.id as number)).toMatchObject({ webhook: 'not configured', mail: 'not configured' });
    } finally {
      await bare.close();
    }
  });

  it('refuses notification settings that cannot work', () => {
    expect(() => loadConfig({}, { PLANETLITE_NOTIFY_WEBHOOK: 'ftp://example.org/x' })).toThrow(ConfigError);
    expect(() => loadConfig({}, { PLANETLITE_SMTP_URL: 'mail.example.org' })).toThrow(/PLANETLITE_SMTP_URL/);
    expect(loadConfig({}, { PLANETLITE_SMTP_URL: 'smtp://relay.test:25' }).notify.smtpUrl).toBe('smtp://relay.test:25');
  });
});
