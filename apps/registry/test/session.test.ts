// Browser sessions: the httpOnly cookie login issues, the cross-site checks on calls that ride on
// it, logout ending it on the server, and the dashboard served with a strict CSP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, makeWorld, testApp, type TestApp, type World } from './helpers.js';
import { findDashboardDir } from '../src/plugins/dashboard.js';

let t: TestApp;
let w: World;
const HOST = 'registry.test:8080';
const dashboard = { host: HOST, 'x-requested-with': 'planetlite', origin: `https://${HOST}` };

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app);
});
afterAll(async () => t?.close());

/** Logs the world's pi in as a browser would; returns the Cookie header to send back. */
async function browserLogin(): Promise<{ cookie: string; setCookie: string; body: any }> {
  const r = await call(t.app, 'POST', '/v1/auth/login', null, { email: `pi${w.site.slice(5)}@${w.site}.test`, password: 'password-123', cookie: true }, dashboard);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  const setCookie = String(r.headers['set-cookie']);
  return { cookie: setCookie.split(';')[0]!, setCookie, body: r.body };
}

describe('browser sessions', () => {
  it('login with cookie: true sets an httpOnly, Secure, SameSite=Strict cookie and leaves the token out of the answer', async () => {
    const { setCookie, body, cookie } = await browserLogin();
    expect(setCookie).toMatch(/^planetlite_session=[^;]+;/);
    for (const attr of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/']) expect(setCookie).toContain(attr);
    expect(body.token).toBeUndefined();
    expect(body.user.email).toContain('@');
    const me = await call(t.app, 'GET', '/v1/users/me', null, undefined, { cookie, host: HOST });
    expect(me.status).toBe(200);
    expect(me.body.id).toBe(body.user.id);
  });

  it('a cookie login without the dashboard header, or from another origin, is refused', async () => {
    const creds = { email: 'admin@planetlite.test', password: 'admin-password', cookie: true };
    const bare = await call(t.app, 'POST', '/v1/auth/login', null, creds, { host: HOST });
    expect(bare.status).toBe(403);
    expect(bare.body.code).toBe('cross_site_refused');
    expect(bare.headers['set-cookie']).toBeUndefined();
    const foreign = await call(t.app, 'POST', '/v1/auth/login', null, creds, { ...dashboard, origin: 'https://evil.example' });
    expect(foreign.status).toBe(403);
    expect(foreign.body.code).toBe('cross_site_refused');
  });

  it('a state-changing call with the cookie needs the header and a same origin; reads and bearer calls do not', async () => {
    const { cookie } = await browserLogin();
    const slice = (name: string) => ({ name: `${w.site}_${name}`, description: 'made from a browser', url: 'https://example.org' });
    const noHeader = await call(t.app, 'POST', '/v1/slices', null, slice('csrf1'), { cookie, host: HOST });
    expect(noHeader.status).toBe(403);
    expect(noHeader.body.code).toBe('cross_site_refused');
    expect(noHeader.body.detail).toContain('X-Requested-With');
    const crossOrigin = await call(t.app, 'POST', '/v1/slices', null, slice('csrf2'), { cookie, ...dashboard, origin: 'https://attacker.example' });
    expect(crossOrigin.status).toBe(403);
    const nullOrigin = await call(t.app, 'POST', '/v1/slices', null, slice('csrf3'), { cookie, ...dashboard, origin: 'null' });
    expect(nullOrigin.status).toBe(403);
    expect((await call(t.app, 'GET', `/v1/slices/${w.slice}`, null, undefined, { cookie, host: HOST })).status).toBe(200);
    const good = await call(t.app, 'POST', '/v1/slices', null, slice('fromweb'), { cookie, ...dashboard });
    expect(good.status, JSON.stringify(good.body)).toBe(201);
    // No Origin header at all (some same-origin requests): the custom header is enough.
    const { origin: _o, ...noOrigin } = dashboard;
    const renew = await call(t.app, 'POST', `/v1/slices/${w.site}_fromweb/renew`, null, { expires_at: new Date(Date.now() + 86_400_000 * 7).toISOString() }, { cookie, ...noOrigin });
    expect(renew.status, JSON.stringify(renew.body)).toBe(200);
    // Bearer tokens (CLI, scripts) are not subject to any of this.
    expect((await call(t.app, 'POST', '/v1/slices', w.pi, slice('bearer'))).status).toBe(201);
  });

  it('logout ends the cookie session on the server and clears the cookie', async () => {
    const { cookie } = await browserLogin();
    const out = await call(t.app, 'POST', '/v1/auth/logout', null, undefined, { cookie, ...dashboard });
    expect(out.status).toBe(204);
    expect(String(out.headers['set-cookie'])).toMatch(/^planetlite_session=; .*Max-Age=0/);
    // The browser may still hold the old cookie: the registry no longer knows it.
    const after = await call(t.app, 'GET', '/v1/users/me', null, undefined, { cookie, host: HOST });
    expect(after.status).toBe(401);
    expect(after.body.code).toBe('token_invalid');
  });

  it('a node key in the cookie is no session', async () => {
    const r = await call(t.app, 'GET', '/v1/users/me', null, undefined, { cookie: `planetlite_session=${w.node}`, host: HOST });
    expect(r.status).toBe(401);
    expect(r.body.code).toBe('token_invalid');
  });
});

describe('the dashboard', () => {
  it('is served at / with a strict Content-Security-Policy and no inline script', async () => {
    expect(findDashboardDir(), 'apps/web is built (npm run build)').not.toBeNull();
    const page = await call(t.app, 'GET', '/');
    expect(page.status).toBe(200);
    expect(String(page.headers['content-type'])).toContain('text/html');
    const csp = String(page.headers['content-security-policy']);
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('unsafe-eval');
    expect(page.headers['x-frame-options']).toBe('DENY');
    const html = String(page.body);
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, inner] of scripts) {
      expect(attrs).toMatch(/src="\/assets\//);
      expect(inner!.trim()).toBe('');
    }
    // Every asset the page names is served from this origin, nothing from a CDN.
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    for (const ref of refs) {
      expect(ref.startsWith('/')).toBe(true);
      const a = await call(t.app, 'GET', ref);
      expect(a.status, ref).toBe(200);
      expect(String(a.headers['cache-control'])).toContain('immutable');
    }
    expect((await call(t.app, 'GET', '/assets/nope.js')).status).toBe(404);
  });
});
