// The dashboard in a real browser (Debian's chromium via playwright-core) against a real registry
// and a real agent in a node namespace: a researcher logs in, uploads a key, creates a slice, adds
// a sliver and watches it go from pending to running without a reload, copies the ssh command and
// runs it from the experimenter's namespace; a member of another site cannot see the slice; a
// session that ended on the server or whose cookie expired goes back to login; a PI makes an
// enrollment token and the node enrolled with it appears live; the PI sets the node's location and
// the admin's map draws its marker where the coordinates put it; a session whose lifetime (the
// registry's token TTL) ran out goes back to login; a usage plot draws its series. axe-core finds no serious or
// critical violation on any page, at desktop or phone width; screenshots go to test-results/web/.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { PlanetLiteClient, trustRegistry } from '@planetlite/api';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';
import { DESKTOP, launchBrowser, newContext, PHONE, screenshots, seriousViolations } from '../harness/browser.ts';

const SUITE = 'web';
const PI = { email: 'pi@web.test', password: 'pi-password-1', name: 'Pat Researcher' };
const OUTSIDER = { email: 'someone@other.test', password: 'outsider-password', name: 'Olga Outsider' };
const SLICE = 'web_journey';

let node: OneNode;
let browser: Browser;
let url: string;
let piId: string;
const contexts: BrowserContext[] = [];
/** A second registry whose sessions last the shortest lifetime its config allows. */
let shortLived: RunningRegistry | null = null;
const SHORT_ADMIN = { email: 'admin@short.test', password: 'short-admin-password' };
const SHORT_TTL_SECONDS = 60;

beforeAll(async () => {
  node = await startOneNode({ site: 'web', octets: [40, 10], sliverSubnet: (o) => `10.${170 + (o % 10)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
  url = node.registry.url;
  piId = (await node.admin.createUser({ ...PI, site: 'web', roles: ['pi', 'user'] })).id;
  await node.admin.createSite({ login_base: 'other', name: 'Another site', max_slices: 5, max_slivers: 5 });
  await node.admin.createUser({ ...OUTSIDER, site: 'other', roles: ['pi', 'user'] });
  browser = await launchBrowser();
}, 300_000);

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await shortLived?.close();
  await node?.close();
}, 120_000);

async function open(at = url): Promise<Page> {
  const ctx = await newContext(browser, at);
  contexts.push(ctx);
  const page = await ctx.newPage();
  await page.goto(at);
  return page;
}

/** axe at desktop and phone width, and a screenshot at each. */
async function checkPage(page: Page, name: string): Promise<void> {
  await page.locator('main h1').first().waitFor();
  expect(await seriousViolations(page), `${name} at desktop width`).toEqual([]);
  await page.setViewportSize(PHONE);
  expect(await seriousViolations(page), `${name} at phone width`).toEqual([]);
  await page.setViewportSize(DESKTOP);
  await screenshots(page, SUITE, name);
}

async function logIn(page: Page, who: { email: string; password: string }): Promise<void> {
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  // In: the page the address names (the slices, or where the session ended).
  const inside = page.getByRole('button', { name: 'Log out' });
  const refused = page.locator('main.login .error');
  await inside.or(refused).first().waitFor();
  if (await refused.isVisible()) throw new Error(`login refused: ${await refused.textContent()}`);
}

let shortPage: Page;
let shortExpires: number;
let shortToken: string;
describe('a session with a short lifetime (started first, checked at the end)', () => {
  it('logs in on a registry whose login tokens last 60 s', async () => {
    shortLived = await startRegistry(
      { listen: '127.0.0.1:0', adminEmail: SHORT_ADMIN.email, adminPassword: SHORT_ADMIN.password, sweeps: false },
      { PLANETLITE_TOKEN_TTL_SECONDS: String(SHORT_TTL_SECONDS) },
    );
    shortPage = await open(shortLived.url);
    await logIn(shortPage, SHORT_ADMIN);
    await shortPage.getByRole('heading', { level: 1, name: 'Slices' }).waitFor();
    const cookie = (await shortPage.context().cookies()).find((c) => c.name === 'planetlite_session')!;
    shortExpires = cookie.expires * 1000;
    shortToken = cookie.value;
    expect(shortExpires - Date.now()).toBeLessThanOrEqual(SHORT_TTL_SECONDS * 1000);
    // Works while the session lives.
    await shortPage.getByRole('link', { name: 'Nodes' }).click();
    await shortPage.getByRole('heading', { level: 1, name: 'Nodes' }).waitFor();
  }, 60_000);
});

describe('the researcher journey', () => {
  let page: Page;

  it('logs in with the keyboard alone; the session cookie is invisible to the page', async () => {
    page = await open();
    await page.getByRole('heading', { name: 'Log in to PlanetLite' }).waitFor();
    await checkPage(page, 'login');
    // A wrong password is shown in words with its code.
    await page.getByLabel('Email').fill(PI.email);
    await page.getByLabel('Password').fill('wrong-password');
    await page.keyboard.press('Enter');
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('invalid_credentials');
    // Keyboard only, from a fresh page: Tab to the email field, type, Tab, type, Enter.
    await page.reload();
    await page.getByRole('heading', { name: 'Log in to PlanetLite' }).waitFor();
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('email');
    await page.keyboard.type(PI.email);
    await page.keyboard.press('Tab');
    await page.keyboard.type(PI.password);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: 'Slices' }).waitFor();
    expect(await page.evaluate(() => document.cookie)).not.toContain('planetlite_session');
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === 'planetlite_session');
    expect(session).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict' });
    await expect.poll(() => page.locator('.empty').first().textContent()).toContain('Create one below');
    await checkPage(page, 'slices-empty');
  }, 120_000);

  it('the page runs no inline script (CSP)', async () => {
    const outcome = await page.evaluate(() => new Promise<{ ran: boolean; directive: string }>((resolve) => {
      const w = window as unknown as { inlineRan?: boolean };
      w.inlineRan = false;
      document.addEventListener('securitypolicyviolation', (e) => resolve({ ran: Boolean(w.inlineRan), directive: e.effectiveDirective }), { once: true });
      const s = document.createElement('script');
      s.textContent = 'window.inlineRan = true';
      document.body.append(s);
    }));
    expect(outcome).toEqual({ ran: false, directive: 'script-src-elem' });
  });

  it('uploads an ssh key and shows its fingerprint', async () => {
    await page.getByRole('link', { name: 'SSH keys' }).click();
    await page.getByRole('heading', { level: 1, name: 'SSH keys' }).waitFor();
    await expect.poll(() => page.locator('.empty').first().textContent()).toContain('no key yet');
    await checkPage(page, 'keys-empty');
    await page.getByLabel('Public key (one OpenSSH line)').fill('ssh-ed25519 not-a-key');
    await page.getByRole('button', { name: 'Add key' }).click();
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('invalid_request');
    await page.getByLabel('Public key (one OpenSSH line)').fill(readFileSync(`${node.key}.pub`, 'utf8'));
    await page.getByRole('button', { name: 'Add key' }).click();
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${node.key}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
    await page.getByText(fingerprint).waitFor();
    await checkPage(page, 'keys');
  }, 60_000);

  it('creates a slice', async () => {
    await page.getByRole('link', { name: 'Slices' }).click();
    await page.getByLabel('Name').fill('journey');
    await page.getByLabel('Description').fill('Measuring things from the dashboard');
    await page.getByLabel('Project URL').fill('https://example.org/journey');
    await page.getByLabel('Image').fill('tiny');
    await page.getByRole('button', { name: 'Create slice' }).click();
    await page.getByRole('heading', { level: 1, name: `Slice ${SLICE}` }).waitFor();
    await expect.poll(() => page.locator('.empty').first().textContent()).toContain('no sliver yet');
    await checkPage(page, 'slice-new');
  }, 60_000);

  it('adds a sliver from the node table and sees it go from pending to running without a reload', async () => {
    // With the agent stopped the sliver stays pending until the agent comes back.
    await node.stopAgent();
    await page.evaluate(() => { (window as unknown as { notReloaded: boolean }).notReloaded = true; });
    await page.getByRole('checkbox', { name: `Pick node.${node.tag}.test` }).check();
    await page.getByRole('button', { name: 'Add 1 sliver' }).click();
    const state = page.locator('table', { has: page.locator('caption', { hasText: 'Slivers of this slice' }) }).locator('.badge').first();
    await expect.poll(() => state.textContent()).toBe('pending');
    await checkPage(page, 'slice-pending');
    await node.startAgent();
    await expect.poll(() => state.textContent(), { timeout: 120_000, intervals: [250] }).toBe('running');
    expect(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
    // The slice's events list the change as it happened.
    await expect.poll(() => page.locator('ol.events').textContent()).toContain('running');
    await checkPage(page, 'slice-running');
  }, 180_000);

  it('copies the ssh command, which works from the experimenter namespace', async () => {
    const row = page.locator('tr', { has: page.locator('code.cmd') }).first();
    await row.getByRole('button', { name: 'Copy' }).click();
    await expect.poll(() => row.getByRole('status').textContent()).toBe('Copied');
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    expect(copied).toMatch(new RegExp(`^ssh -p \\d+ ${SLICE}@${node.publicAddress.replace(/\./g, '\\.')}$`));
    // The copied words as they are, with only the experimenter's key and non-interactive options added.
    const args = copied.split(' ').slice(1);
    const out = await until('the copied ssh command to answer', async () => execFileSync('ip', [
      'netns', 'exec', node.net, 'ssh', '-i', node.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR',
      ...args, 'cat /etc/slicename',
    ], { encoding: 'utf8', timeout: 20_000 }).trim(), 60_000);
    expect(out).toBe(SLICE);
  }, 90_000);

  it('shows a sliver page with its state, ssh command, actions and usage', async () => {
    await page.locator('tr', { has: page.locator('code.cmd') }).first().getByRole('link').click();
    await page.getByRole('heading', { level: 1, name: /^Sliver on / }).waitFor();
    expect(await page.locator('#ssh-command').textContent()).toMatch(/^ssh -p \d+ web_journey@/);
    await page.getByRole('heading', { name: 'Usage, last 24 hours' }).waitFor();
    // Stop and start again, watching the state change live.
    await page.getByRole('button', { name: 'stop', exact: true }).click();
    const badge = page.locator('dl.facts .badge').first();
    await expect.poll(() => badge.textContent(), { timeout: 60_000, intervals: [250] }).toBe('stopped');
    await page.getByRole('button', { name: 'start', exact: true }).click();
    await expect.poll(() => badge.textContent(), { timeout: 60_000, intervals: [250] }).toBe('running');
    await checkPage(page, 'sliver');
  }, 150_000);

  it('a member of another site cannot see the slice', async () => {
    const other = await open();
    await logIn(other, OUTSIDER);
    await other.getByRole('heading', { level: 1, name: 'Slices' }).waitFor();
    await expect.poll(() => other.locator('.empty').first().textContent()).toContain('You are in no slice yet');
    expect(await other.locator('main').textContent()).not.toContain(SLICE);
    await other.goto(`${url}/#/slices/${SLICE}`);
    await expect.poll(() => other.getByRole('alert').first().textContent()).toMatch(/(not_found|forbidden)/);
    expect(await other.locator('main').textContent()).not.toContain('Measuring things from the dashboard');
    // And the API behind the page says the same to a script with that session's rights.
    const api = new PlanetLiteClient({ registry: url });
    await api.login(OUTSIDER.email, OUTSIDER.password);
    expect((await api.listSlices()).map((s) => s.name)).not.toContain(SLICE);
    await checkPage(other, 'outsider-refused');
  }, 60_000);

  it('a session ended on the server, or whose cookie expired, goes back to login', async () => {
    await node.admin.revokeUserTokens(piId);
    await page.getByRole('link', { name: 'SSH keys' }).click();
    await page.getByRole('heading', { name: 'Log in to PlanetLite' }).waitFor();
    expect(await page.getByRole('status').first().textContent()).toContain('Your session has ended');
    await checkPage(page, 'session-ended');
    // Log in again, then the browser drops the cookie as it does when Max-Age runs out.
    await logIn(page, PI);
    await page.context().clearCookies();
    await page.getByRole('link', { name: 'Nodes' }).click();
    await page.getByRole('heading', { name: 'Log in to PlanetLite' }).waitFor();
    await logIn(page, PI);
    // Back where the session ended.
    await page.getByRole('heading', { level: 1, name: 'Nodes' }).waitFor();
  }, 60_000);

  it('draws the usage plots of a sliver the node reports on', async () => {
    const [sliver] = await node.admin.listSlivers(SLICE);
    // The registry keeps a sample about every minute; a line needs two.
    await until('two usage samples', async () => (await node.admin.sliverUsage(sliver!.id)).samples.filter((x) => x.memory_bytes !== null).length >= 2, 180_000);
    await page.goto(`${url}/#/slivers/${sliver!.id}`);
    const memory = page.locator('figure.chart', { has: page.locator('figcaption', { hasText: 'Memory' }) }).locator('canvas');
    await memory.waitFor();
    // Pixels in the series' own colour (the first stroke, #2563eb): the line, not axes or grid.
    const seriesPixels = () => memory.evaluate((c: HTMLCanvasElement) => {
      const data = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3]! > 128 && Math.abs(data[i]! - 37) < 50 && Math.abs(data[i + 1]! - 99) < 50 && Math.abs(data[i + 2]! - 235) < 50) n++;
      }
      return n;
    });
    await expect.poll(seriesPixels).toBeGreaterThan(20);
    await checkPage(page, 'sliver-usage');
  }, 240_000);
});

describe('the PI journey', () => {
  it('makes an enrollment token; the node enrolled with it appears live', async () => {
    const page = await open();
    await logIn(page, PI);
    await page.getByRole('link', { name: 'My site' }).click();
    await page.getByRole('heading', { level: 1, name: 'Site web' }).waitFor();
    await checkPage(page, 'site');
    await page.evaluate(() => { (window as unknown as { notReloaded: boolean }).notReloaded = true; });
    await page.getByRole('button', { name: 'Make an enrollment token' }).click();
    const command = (await page.locator('#enroll-command').textContent())!;
    expect(command).toContain(`--registry ${url}`);
    expect(command).toContain(`--ca-pin ${node.registry.caPin}`);
    const token = /--token (\S+)/.exec(command)![1]!;
    await checkPage(page, 'site-token');
    // A machine runs the command: enrolling is this call (planetlite-agent enroll makes it).
    const hostname = `node2.${node.tag}.test`;
    await new PlanetLiteClient({ registry: url }).enroll({
      token, hostname, address: `198.18.${node.publicAddress.split('.')[2]}.9`,
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 1, memory_mb: 512, disk_mb: 1024 },
    });
    await page.getByRole('cell', { name: hostname, exact: true }).waitFor({ timeout: 30_000 });
    expect(await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded)).toBe(true);
    // Drain it from the same table.
    const row = page.locator('tr', { has: page.getByRole('cell', { name: hostname, exact: true }) });
    await row.getByRole('button', { name: 'Drain' }).click();
    await row.getByRole('button', { name: 'Undrain' }).waitFor();
    await checkPage(page, 'site-nodes');
    // A new member of the site, with a role.
    await page.getByText('Add a user').click();
    await page.getByLabel('Name').fill('Terry Tech');
    await page.getByLabel('Email').fill('tech@web.test');
    await page.getByLabel('First password (8 or more characters)').fill('tech-password-1');
    await page.getByLabel('Role').selectOption('tech');
    await page.getByRole('button', { name: 'Add user' }).click();
    const users = page.getByRole('region', { name: 'Users' });
    await users.getByText('tech@web.test').or(users.getByRole('alert')).first().waitFor();
    expect(await users.getByRole('alert').count(), await users.textContent() ?? '').toBe(0);
    expect((await node.admin.listUsers({ site: 'web' })).find((u) => u.email === 'tech@web.test')?.roles.sort()).toEqual(['tech', 'user']);
    await checkPage(page, 'site-users');
  }, 90_000);
});

describe('the admin pages', () => {
  it('sites and quotas, all nodes, images, the event log with filters, watchdog resets', async () => {
    const page = await open();
    await logIn(page, { email: `admin@web.test`, password: 'web-admin-password' });
    await page.getByRole('link', { name: 'Admin' }).click();
    await page.getByRole('heading', { level: 1, name: 'Admin: Sites' }).waitFor();
    await page.getByLabel('Login base (prefix of its slices)').fill('third');
    await page.getByLabel('Name', { exact: true }).fill('A third site');
    await page.getByRole('button', { name: 'Create site' }).click();
    await page.getByRole('link', { name: 'third' }).waitFor();
    // A quota changed in the table is what the API then says.
    await page.getByLabel('Max slices of third').fill('7');
    await page.getByLabel('Max slices of third').press('Tab');
    await until('the quota to change', async () => (await node.admin.getSite('third')).max_slices === 7, 30_000);
    await checkPage(page, 'admin-sites');
    for (const [tab, heading] of [['All nodes', 'Admin: All nodes'], ['Images', 'Admin: Images'], ['Watchdog resets', 'Admin: Watchdog resets'], ['Event log', 'Admin: Event log']] as const) {
      await page.getByRole('navigation', { name: 'Admin' }).getByRole('link', { name: tab }).click();
      await page.getByRole('heading', { level: 1, name: heading }).waitFor();
      await checkPage(page, `admin-${tab.toLowerCase().replace(/ /g, '-')}`);
    }
    await page.getByLabel('Type').fill('node.drained');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect.poll(() => page.locator('ol.events li').count()).toBe(1);
    expect(await page.locator('ol.events').textContent()).toContain('node.drained');
  }, 120_000);
});

describe("the admin's map", () => {
  const PLACE = { city: 'Princeton, NJ', latitude: 40.3573, longitude: -74.6672 };

  it('the PI sets the location in the browser; the admin map draws the marker where the coordinates put it', async () => {
    const hostname = `node.${node.tag}.test`;
    const pi = await open();
    await logIn(pi, PI);
    await pi.getByRole('link', { name: 'My site' }).click();
    await pi.getByRole('heading', { level: 1, name: 'Site web' }).waitFor();
    await pi.getByRole('button', { name: `Set location of ${hostname}` }).click();
    const form = pi.getByRole('form', { name: `Location of ${hostname}` });
    await form.getByLabel('City').fill(PLACE.city);
    await form.getByLabel(/^Latitude/).fill(String(PLACE.latitude));
    await form.getByLabel(/^Longitude/).fill(String(PLACE.longitude));
    await checkPage(pi, 'site-location');
    await form.getByRole('button', { name: 'Save location' }).click();
    await pi.getByRole('button', { name: `Change location of ${hostname}` }).waitFor();
    expect((await node.admin.getNode(node.nodeId)).location).toEqual(PLACE);

    const page = await open();
    await logIn(page, { email: 'admin@web.test', password: 'web-admin-password' });
    await page.goto(`${url}/#/admin/nodes`);
    await page.getByRole('heading', { level: 1, name: 'Admin: All nodes' }).waitFor();
    const svg = page.locator('svg.world');
    const marker = svg.locator(`g.marker[data-node="${hostname}"]`);
    await marker.waitFor();
    expect(await marker.getAttribute('class')).toContain('marker-online');
    expect(await marker.getAttribute('aria-label')).toContain(`${hostname}, online`);
    // Equirectangular: x from longitude over 360°, y from latitude over 180°, in the SVG's own units…
    const [x0, y0, w, h] = (await svg.getAttribute('viewBox'))!.split(/\s+/).map(Number) as [number, number, number, number];
    const fx = (PLACE.longitude + 180) / 360;
    const fy = (90 - PLACE.latitude) / 180;
    const circle = marker.locator('circle');
    expect(Number(await circle.getAttribute('cx'))).toBeCloseTo(x0 + fx * w, 2);
    expect(Number(await circle.getAttribute('cy'))).toBeCloseTo(y0 + fy * h, 2);
    // …and where it shows on the screen.
    const box = (await svg.boundingBox())!;
    const dot = (await circle.boundingBox())!;
    expect((dot.x + dot.width / 2 - box.x) / box.width).toBeCloseTo(fx, 2);
    expect((dot.y + dot.height / 2 - box.y) / box.height).toBeCloseTo(fy, 2);
    // Keyboard: Tab from the top of the page reaches the marker, which names its node.
    for (let i = 0; i < 40 && !(await marker.evaluate((el) => el === document.activeElement)); i++) await page.keyboard.press('Tab');
    expect(await marker.evaluate((el) => el === document.activeElement)).toBe(true);
    await expect.poll(() => page.locator('.map-pick').textContent()).toContain(`${hostname}, online, site web, Princeton, NJ`);
    // The node enrolled without an agent has no location: listed under the map, with how to set one.
    const unplaced = page.locator('.unplaced');
    expect(await unplaced.textContent()).toContain(`node2.${node.tag}.test`);
    expect(await unplaced.textContent()).toContain('planetlite node location NODE --city CITY --lat LATITUDE --lon LONGITUDE');
    await checkPage(page, 'admin-map');
  }, 120_000);
});

describe('a session with a short lifetime, at the end', () => {
  it('is sent back to login on the next action once its lifetime ran out, and back where it was after logging in', async () => {
    await until('the short session to expire', async () => Date.now() > shortExpires + 1000, (SHORT_TTL_SECONDS + 30) * 1000);
    // The registry ends it too, not only the browser: the token the cookie held is refused.
    trustRegistry(shortLived!.url, shortLived!.ca!);
    await expect(new PlanetLiteClient({ registry: shortLived!.url, token: shortToken }).me()).rejects.toMatchObject({ status: 401 });
    await shortPage.getByRole('link', { name: 'SSH keys' }).click();
    await shortPage.getByRole('heading', { name: 'Log in to PlanetLite' }).waitFor();
    await logIn(shortPage, SHORT_ADMIN);
    await shortPage.getByRole('heading', { level: 1, name: 'SSH keys' }).waitFor();
  }, 150_000);
});
