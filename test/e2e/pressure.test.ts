// End to end on one node: the memory watchdog freezes before it kills. A sliver thrashing in its
// memory limit (readers cycling through more file data than its memory_mb holds, so every read
// reclaims and refaults) raises the node's memory pressure; the watchdog freezes it, its members
// are told, its neighbour's ssh latency comes back, it is thawed when the pressure falls, and the
// next time it brings the pressure back it is reset (freeze_strikes 2).
// Same addresses (198.18.250-254.0/24) and sliver subnets (10.80-84.0.0/24) as limits.test.ts:
// never run both at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Event, PlanetLiteClient, Sliver } from '@planetlite/api';
import { containerName } from '@planetlite/instance';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

// Levels low enough that one small thrashing sliver crosses them on this machine (its own
// pressure was 5–20 % in trials, the node's a little less), high above an idle node's 0.
const FREEZE = 6;
const THAW = 1;

let node: OneNode;
let admin: PlanetLiteClient;
let nodeId: string;

const sh = (s: Sliver, command: string) => node.sshAsync(s.ports.first, 'root', command);

async function running(slice: string, resources: { memory_mb: number; disk_mb: number }): Promise<Sliver> {
  await admin.createSlice({ name: slice, description: `pressure: ${slice}`, url: 'https://example.org', image: 'tiny', resources });
  const created = await admin.createSliver(slice, nodeId);
  const s = await until(`sliver of ${slice} to run`, async () => {
    const got = await admin.getSliver(created.id);
    if (got.state === 'failed') throw new Error(`sliver failed: ${got.error}`);
    return got.state === 'running' ? got : null;
  }, 90_000);
  await until(`ssh to ${slice}`, async () => (await sh(s, 'id -u').catch(() => '')) === '0', 30_000);
  return s;
}

/** The start time of the sliver's init (field 22 of /proc/1/stat): a restart changes it. */
const initStart = (s: Sliver) => sh(s, 'cut -d" " -f22 /proc/1/stat');

/** The sliver's v1 freezer state as the host's cgroupfs shows it. */
function freezerState(id: string): string | null {
  const dir = execFileSync('find', ['/sys/fs/cgroup/freezer', '-maxdepth', '3', '-type', 'd', '-name', `lxc.payload.${containerName(id)}`], { encoding: 'utf8' }).trim().split('\n')[0];
  if (!dir) return null;
  try {
    return readFileSync(`${dir}/freezer.state`, 'utf8').trim();
  } catch {
    return null;
  }
}

/** ssh options for one connection to a sliver that later commands share (ControlPath): an exec
 * then costs a channel, a fork and the command, not a new handshake. */
const muxArgs = (s: Sliver, master: boolean) => [
  'netns', 'exec', node.net, 'ssh', '-i', node.key, '-p', String(s.ports.first),
  '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR',
  '-o', `ControlPath=${join(node.dir, `mux-${s.id.slice(0, 8)}`)}`, '-o', `ControlMaster=${master ? 'yes' : 'no'}`,
  ...(master ? ['-N'] : []), `root@${node.publicAddress}`,
];
const masters: ChildProcess[] = [];

/** One exec in the neighbour over its shared connection, ms. */
async function latency(s: Sliver): Promise<number> {
  const t = performance.now();
  await promisify(execFile)('ip', [...muxArgs(s, false), 'cat /etc/slicename >/dev/null && ls / >/dev/null'], { timeout: 30_000 });
  return performance.now() - t;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

async function eventsOf(type: string, after: number, sliver?: string): Promise<Event[]> {
  const evs = (await admin.listEvents({ type, after })) as Event[];
  return sliver ? evs.filter((e) => e.sliver === sliver) : evs;
}

beforeAll(async () => {
  node = await startOneNode({
    site: 'prs',
    octets: [250, 5],
    sliverSubnet: (o) => `10.${80 + (o % 5)}.0.0/24`,
    image: { name: 'tiny', file: 'tiny.tar' },
    agentSettings: {
      // The memory levels out of the way (the thrasher holds little resident memory): only the freeze acts.
      watchdog: { budget_mb: 8192, freeze_psi_some: FREEZE, thaw_psi_some: THAW, sliver_psi_min: 1, freeze_timeout_seconds: 120, freeze_strikes: 2 },
    },
  });
  ({ admin, nodeId } = node);
}, 240_000);

afterAll(async () => {
  for (const m of masters) m.kill('SIGKILL');
  await node?.close();
}, 120_000);

describe('memory watchdog: freeze on memory pressure', () => {
  it('freezes a thrashing sliver, restores its neighbour, thaws it when the pressure falls, and resets it when it comes back', async () => {
    const neighbour = await running('prs_quiet', { memory_mb: 256, disk_mb: 256 });
    const thrasher = await running('prs_thrash', { memory_mb: 32, disk_mb: 512 });
    const neighbourStart = await initStart(neighbour);
    const thrasherStart = await initStart(thrasher);
    masters.push(spawn('ip', muxArgs(neighbour, true), { stdio: 'ignore' }));
    await until('the shared connection to the neighbour', async () => (await latency(neighbour).catch(() => null)) ?? null, 30_000);
    // Three files of 48 MiB, written from inside, so their page cache is the sliver's.
    await sh(thrasher, 'for i in 1 2 3; do dd if=/dev/urandom of=/root/f$i bs=1M count=48 2>/dev/null; done; sync');

    const before: number[] = [];
    for (let i = 0; i < 15; i++) before.push(await latency(neighbour));
    const since = (await admin.listEvents({})).at(-1)?.id ?? 0;

    // setsid: in a session of its own, so the end of the ssh session does not take it along.
    await sh(thrasher, `setsid sh -c 'for i in 1 2 3; do (while :; do cat /root/f$i >/dev/null; done) & done; wait' </dev/null >/dev/null 2>&1 &`);
    const thrashAt = Date.now();
    const during: number[] = [];
    let frozenEv: Event | undefined;
    while (!frozenEv) {
      if (Date.now() - thrashAt > 180_000) throw new Error(`the thrasher was not frozen within 180 s (neighbour latency ${during.map(Math.round).join(', ')} ms)`);
      const l = await latency(neighbour);
      frozenEv = (await eventsOf('sliver.frozen', since, thrasher.id))[0];
      if (!frozenEv) during.push(l);
    }
    const timeToFreeze = Date.parse((frozenEv.data as { frozen_at: string }).frozen_at) - thrashAt;

    // The event carries the figures; the host's freezer and the API both say frozen, and by whom.
    const fd = frozenEv.data as Record<string, unknown> & { top: Array<{ sliver: string }> };
    expect(frozenEv).toMatchObject({ node: nodeId, slice: 'prs_thrash' });
    expect(fd).toMatchObject({ freeze_psi_some: FREEZE, thaw_psi_some: THAW, strike: 1 });
    expect(fd.node_psi_some_avg10 as number).toBeGreaterThanOrEqual(FREEZE);
    expect(fd.sliver_psi_some_avg10 as number).toBeGreaterThanOrEqual(1);
    expect(fd.top[0]!.sliver).toBe(thrasher.id);
    expect(freezerState(thrasher.id)).toBe('FROZEN');
    const held = await until('the API to show the watchdog hold', async () => {
      const s = await admin.getSliver(thrasher.id);
      return s.watchdog_hold ? s : null;
    }, 30_000);
    expect(held).toMatchObject({ desired: 'running', state: 'stopped', watchdog_hold: { node_psi_some_avg10: fd.node_psi_some_avg10, thaw_psi_some: THAW } });
    // The members are told (no webhook or relay here: that is recorded).
    const told = await until('the slice.notified event', async () => {
      const evs = (await admin.listEvents({ type: 'slice.notified', slice: 'prs_thrash' })) as Event[];
      return evs.find((e) => (e.data as { about?: number }).about === frozenEv!.id) ?? null;
    }, 30_000);
    expect(told.data).toMatchObject({ about_type: 'sliver.frozen', webhook: 'not configured' });

    // While it is frozen the neighbour answers as before the thrashing.
    const frozen: number[] = [];
    let thawEv: Event | undefined;
    while (!thawEv) {
      if (Date.now() - thrashAt > 300_000) throw new Error('the thrasher was not thawed within 300 s');
      const l = await latency(neighbour);
      thawEv = (await eventsOf('sliver.thawed', since, thrasher.id))[0];
      if (!thawEv && frozen.length < 30) frozen.push(l);
    }
    const td = thawEv.data as Record<string, number | null>;
    expect(td.node_psi_some_avg10!).toBeLessThan(THAW);
    expect(td.error).toBeNull();

    // Thawed, it thrashes again: the second time is a reset (freeze_strikes 2), with the figures.
    const reset = await until('the watchdog.reset event', async () => (await eventsOf('watchdog.reset', since, thrasher.id))[0] ?? null, 240_000);
    expect(reset.data).toMatchObject({ level: 'pressure', action: 'restart', error: null });
    expect((reset.data as { reason: string }).reason).toContain('2 times');
    await until('the thrasher to run again, restarted', async () => {
      const s = await admin.getSliver(thrasher.id);
      if (s.state !== 'running' || s.watchdog_hold) return null;
      return (await initStart(thrasher).catch(() => thrasherStart)) !== thrasherStart ? true : null;
    }, 90_000);
    expect(await sh(thrasher, 'ps | grep -c "[c]at /root" || true')).toBe('0');
    const after: number[] = [];
    for (let i = 0; i < 15; i++) after.push(await latency(neighbour));

    // The neighbour never stopped; it was slower while the thrasher ran than before, while it was frozen, and after.
    expect(await initStart(neighbour)).toBe(neighbourStart);
    expect((await admin.getSliver(neighbour.id)).state).toBe('running');
    expect(await eventsOf('sliver.frozen', since, neighbour.id)).toHaveLength(0);
    const m = { before: median(before), during: median(during), frozen: median(frozen), after: median(after) };
    console.log(
      `pressure watchdog: thrash → frozen in ${timeToFreeze} ms (node PSI some ${String(fd.node_psi_some_avg10)} %, sliver ${String(fd.sliver_psi_some_avg10)} %); ` +
        `frozen ${String(td.frozen_ms)} ms; neighbour exec median before ${Math.round(m.before)} / thrashing ${Math.round(m.during)} (${during.length} samples) / frozen ${Math.round(m.frozen)} / after ${Math.round(m.after)} ms`,
    );
    expect(during.length).toBeGreaterThanOrEqual(5);
    expect(m.frozen).toBeLessThan(m.during);
    expect(m.after).toBeLessThan(m.during);
  }, 600_000);
});
