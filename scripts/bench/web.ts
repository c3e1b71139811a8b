// The dashboard's slice page with many slivers, measured in the browser (Debian's chromium via
// playwright-core): time to first render of a slice with N slivers, and time to apply 100 sliver
// state changes arriving on the event stream, with the longest frame gap while they land.
//
//   node scripts/bench/web.ts [--slivers 1000] [--changes 100] [--write docs/benchmarks.md]
//
// Needs `bash scripts/setup.sh` (the build and chromium). The registry runs in this process on
// embedded PGlite; its N nodes are enrolled through the API and report the changes as real
// agents do (PUT observed-state with their node keys). No agent or sliver runs.
import { cpus, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { PlanetLiteClient, trustRegistry } from '@planetlite/api';
import { startRegistry } from '@planetlite/registry';
import { launchBrowser, newContext } from '../../test/harness/browser.ts';
import { appendResults } from './results.ts';

const { values: args } = parseArgs({ options: { slivers: { type: 'string', default: '1000' }, changes: { type: 'string', default: '100' }, write: { type: 'string' } } });
const N = Number(args.slivers);
const CHANGES = Math.min(N, Number(args.changes));
const ADMIN = { email: 'admin@bench.test', password: 'bench-admin-password' };

async function inBatches<T>(items: T[], size: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

const registry = await startRegistry({ listen: '127.0.0.1:0', adminEmail: ADMIN.email, adminPassword: ADMIN.password, sweeps: false, logLevel: 'silent' });
const browser = await launchBrowser();
try {
  trustRegistry(registry.url, registry.ca!);
  const admin = new PlanetLiteClient({ registry: registry.url });
  await admin.login(ADMIN.email, ADMIN.password);
  await admin.createSite({ login_base: 'bench', name: 'Bench', max_slices: 10, max_slivers: N + 10 });
  const nodes: Array<{ id: string; key: string }> = [];
  const started = Date.now();
  await inBatches([...Array(N).keys()], 20, async (i) => {
    const { token } = await admin.createEnrollmentToken('bench');
    const e = await admin.enroll({ token, hostname: `n${i}.bench.test`, address: `192.0.2.${i % 250}`, capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 4, memory_mb: 8192, disk_mb: 100000 } });
    nodes.push({ id: e.node_id, key: e.node_key });
  });
  await admin.createSlice({ name: 'bench_big', description: 'many slivers', url: 'https://example.org' });
  const slivers = new Map<string, string>();
  await inBatches(nodes, 20, async (n) => slivers.set(n.id, (await admin.createSliver('bench_big', n.id)).id));
  console.log(`setup: ${N} nodes and slivers in ${((Date.now() - started) / 1000).toFixed(0)} s`);

  const ctx = await newContext(browser, registry.url);
  const page = await ctx.newPage();
  await page.goto(registry.url);
  await page.getByLabel('Email').fill(ADMIN.email);
  await page.getByLabel('Password').fill(ADMIN.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('button', { name: 'Log out' }).waitFor();

  // First render: a fresh load of the slice's page until its sliver table has every row.
  await page.goto(`${registry.url}/#/slices/bench_big`);
  await page.reload();
  const firstRender = await (await page.waitForFunction(([sel, n]) => document.querySelectorAll(sel as string).length >= (n as number) && performance.now(), ['.sliver-table tbody tr', N], { polling: 'raf', timeout: 120_000 })).jsonValue() as number;

  // 100 changes from the stream: nodes report their sliver running, as an agent would.
  await page.evaluate(() => {
    const w = window as unknown as { gaps: number[]; stopGaps: boolean };
    w.gaps = [];
    w.stopGaps = false;
    let last = performance.now();
    const tick = (t: number) => {
      w.gaps.push(t - last);
      last = t;
      if (!w.stopGaps) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  const t0 = Date.now();
  await inBatches(nodes.slice(0, CHANGES), 10, async (n) => {
    const c = new PlanetLiteClient({ registry: registry.url, token: n.key });
    await c.putObservedState(n.id, { slivers: [{ id: slivers.get(n.id)!, state: 'running', address: '10.0.0.2' }] });
  });
  const reported = Date.now() - t0;
  await page.waitForFunction((n) => document.querySelectorAll('.sliver-table .state-running').length >= n, CHANGES, { polling: 'raf', timeout: 120_000 });
  const applied = Date.now() - t0;
  const maxGap = await page.evaluate(() => {
    const w = window as unknown as { gaps: number[]; stopGaps: boolean };
    w.stopGaps = true;
    return Math.max(...w.gaps);
  });
  // Still responsive: sorting the table by state after the changes.
  const s0 = Date.now();
  await page.locator('.sliver-table').getByRole('button', { name: 'State' }).click();
  await page.waitForFunction(() => document.querySelector('.sliver-table th[aria-sort="ascending"]')?.textContent?.includes('State'));
  const sort = Date.now() - s0;

  const date = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const text = [
    '',
    `## Dashboard: a slice with ${N} slivers in the browser (\`node scripts/bench/web.ts --slivers ${N}\`), ${date} UTC`,
    '',
    `Machine: ${cpus().length} cores (${cpus()[0]?.model.trim()}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, headless chromium, registry in the same process on PGlite; load average ${loadavg()[0]!.toFixed(1)} at the end.`,
    '',
    '| what | ms |',
    '|---|---:|',
    `| first render: a fresh load of the slice page until all ${N} sliver rows are in the table | ${Math.round(firstRender)} |`,
    `| ${CHANGES} sliver state changes (nodes' reports → event stream → rows patched in place), from the first report until the page shows all | ${applied} (the reports themselves took ${reported}) |`,
    `| longest gap between frames while they landed | ${Math.round(maxGap)} |`,
    `| sorting the ${N} rows by state (click → header marked) | ${sort} |`,
    '',
  ].join('\n');
  console.log(text);
  if (args.write) appendResults(args.write, text);
} finally {
  await browser.close();
  await registry.close();
}
