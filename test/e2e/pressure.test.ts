// End to end on one node: the memory watchdog freezes before it kills. A sliver thrashing in its
// memory limit (readers cycling through more file data than its memory_mb holds, so every read
// reclaims and refaults) raises the node's memory pressure; the watchdog freezes it, its members
// are told, its neighbour's exec latency (timed inside it) comes back, it is thawed when the pressure falls (or
// reset when other work keeps it up), and the next time it brings the pressure back it is reset
// (freeze_strikes 2). Latencies are compared by order only, never against a time.
// Same addresses (198.18.250-254.0/24) and sliver subnets (10.80-84.0.0/24) as limits.test.ts:
// never run both at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

async function running(slice: string, resources: { memory_mb: number; disk_mb: number; cpu_shares?: number }): Promise<Sliver> {
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

/** The host's /proc/uptime as ms since the epoch: slivers read the same file (uptime is not
 * namespaced), so their timestamps line up with the test's. */
const uptimeToEpoch = () => Date.now() - Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000;

/** A probe inside the neighbour: ten short execs (ls, cat) in a row, timed from /proc/uptime, every
 * 50 ms. Measured inside, so that the test's own process spawning on this shared machine does not
 * blur the figures. */
const PROBE = `setsid sh -c 'while :; do read a x </proc/uptime; for i in 1 2 3 4 5; do ls / >/dev/null; cat /etc/slicename >/dev/null; done; read b x </proc/uptime; echo $a $b; sleep 0.05; done' </dev/null >/tmp/latency.log 2>&1 & echo $! >/tmp/latency.pid`;

/** The probe's samples, as epoch ms spans; the probe is stopped. */
async function probeSamples(s: Sliver): Promise<Array<{ start: number; end: number; ms: number }>> {
  const log = await sh(s, 'kill $(cat /tmp/latency.pid); cat /tmp/latency.log');
  const base = uptimeToEpoch();
  return log.split('\n').map((l) => l.trim().split(' ').map(Number)).filter((v) => v.length === 2 && v.every(Number.isFinite)).map(([a, b]) => ({ start: base + a! * 1000, end: base + b! * 1000, ms: (b! - a!) * 1000 }));
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
      watchdog: { budget_mb: 8192, freeze_psi_some: FREEZE, thaw_psi_some: THAW, sliver_psi_min: 1, freeze_timeout_seconds: 60, freeze_strikes: 2 },
    },
  });
  ({ admin, nodeId } = node);
}, 240_000);

afterAll(async () => {
  await node?.close();
}, 120_000);

/** Latencies of samples that overlap [from, to). */
const overlapping = (xs: Array<{ start: number; end: number; ms: number }>, from: number, to: number) => xs.filter((x) => x.end > from && x.start < to).map((x) => x.ms);
/** Latencies of samples wholly inside [from, to). */
const within = (xs: Array<{ start: number; end: number; ms: number }>, from: number, to: number) => xs.filter((x) => x.start >= from && x.end < to).map((x) => x.ms);

describe('memory watchdog: freeze on memory pressure', () => {
  it('freezes a thrashing sliver, restores its neighbour, thaws or resets it, and resets it when the pressure comes back', async () => {
    // The thrasher holds a big cpu share: its reclaim and refaults then take the cpus from its
    // neighbour (as a heavy sliver's would); frozen, it takes nothing. With equal shares, the
    // neighbour's execs on this machine (lots of memory, none short) did not slow down at all.
    const neighbour = await running('prs_quiet', { memory_mb: 256, disk_mb: 256 });
    const thrasher = await running('prs_thrash', { memory_mb: 32, disk_mb: 512, cpu_shares: 262_144 });
    const neighbourStart = await initStart(neighbour);
    const thrasherStart = await initStart(thrasher);
    // Three files of 48 MiB, written from inside, so their page cache is the sliver's.
    await sh(thrasher, 'for i in 1 2 3; do dd if=/dev/urandom of=/root/f$i bs=1M count=48 2>/dev/null; done; sync');

    const since = (await admin.listEvents({})).at(-1)?.id ?? 0;
    await sh(neighbour, PROBE);
    await new Promise((r) => setTimeout(r, 8000));
    // setsid: in a session of its own, so the end of the ssh session does not take it along.
    const thrashAt = Date.now();
    await sh(thrasher, `setsid sh -c 'for i in 1 2 3 1 2 3; do (while :; do cat /root/f$i >/dev/null; done) & done; wait' </dev/null >/dev/null 2>&1 &`);
    const frozenEv = await until('the sliver.frozen event', async () => (await eventsOf('sliver.frozen', since, thrasher.id))[0] ?? null, 180_000);
    const frozenAt = Date.parse((frozenEv.data as { frozen_at: string }).frozen_at);

    // The event carries the figures; the host's freezer and the API both say frozen, and by whom.
    const fd = frozenEv.data as Record<string, unknown> & { top: Array<{ sliver: string }> };
    expect(frozenEv).toMatchObject({ node: nodeId, slice: 'prs_thrash' });
    expect(fd).toMatchObject({ freeze_psi_some: FREEZE, thaw_psi_some: THAW, strike: 1 });
    expect(fd.node_psi_some_avg10 as number).toBeGreaterThanOrEqual(FREEZE);
    expect(fd.sliver_psi_some_avg10 as number).toBeGreaterThanOrEqual(1);
    expect(fd.top[0]!.sliver).toBe(thrasher.id);
    const held = await until('the API to show the watchdog hold', async () => {
      const s = await admin.getSliver(thrasher.id);
      return s.watchdog_hold ? s : null;
    }, 30_000);
    const stillFrozen = (await eventsOf('sliver.thawed', since, thrasher.id)).length === 0 && (await eventsOf('watchdog.reset', since, thrasher.id)).length === 0;
    if (stillFrozen) expect(freezerState(thrasher.id)).toBe('FROZEN');
    expect(held).toMatchObject({ desired: 'running', state: 'stopped', watchdog_hold: { node_psi_some_avg10: fd.node_psi_some_avg10, thaw_psi_some: THAW } });
    // The members are told (no webhook or relay here: that is recorded).
    const told = await until('the slice.notified event', async () => {
      const evs = (await admin.listEvents({ type: 'slice.notified', slice: 'prs_thrash' })) as Event[];
      return evs.find((e) => (e.data as { about?: number }).about === frozenEv.id) ?? null;
    }, 30_000);
    expect(told.data).toMatchObject({ about_type: 'sliver.frozen', webhook: 'not configured' });

    // Thawed when the node's pressure fell, and reset when it thrashed again (freeze_strikes 2);
    // or, where other work keeps the node's pressure above the thaw level, reset after the timeout.
    const end = await until('the thaw or the reset', async () => (await eventsOf('sliver.thawed', since, thrasher.id))[0] ?? (await eventsOf('watchdog.reset', since, thrasher.id))[0] ?? null, 300_000);
    // The agent's own times (the registry's lag behind by the outbox's send).
    const endAt = Date.parse((end.data as { sampled_at?: string; reset_at?: string })[end.type === 'sliver.thawed' ? 'sampled_at' : 'reset_at'] ?? end.at);
    let thawNote = '';
    if (end.type === 'sliver.thawed') {
      const td = end.data as Record<string, number | null>;
      expect(td.node_psi_some_avg10!).toBeLessThan(THAW);
      expect(td.error).toBeNull();
      thawNote = `thawed after ${String(td.frozen_ms)} ms frozen`;
    }
    const reset = await until('the watchdog.reset event', async () => (await eventsOf('watchdog.reset', since, thrasher.id))[0] ?? null, 240_000);
    expect(reset.data).toMatchObject({ level: 'pressure', action: 'restart', error: null });
    expect((reset.data as { reason: string }).reason).toContain(end.type === 'sliver.thawed' ? '2 times' : 's frozen');
    const resetAt = Date.parse((reset.data as { reset_at: string }).reset_at);
    if (!thawNote) thawNote = `reset after ${String((reset.data as { frozen_ms: number }).frozen_ms)} ms frozen`;
    const backAt = await until('the thrasher to run again, restarted', async () => {
      const s = await admin.getSliver(thrasher.id);
      if (s.state !== 'running' || s.watchdog_hold) return null;
      return (await initStart(thrasher).catch(() => thrasherStart)) !== thrasherStart ? Date.now() : null;
    }, 90_000);
    expect(await sh(thrasher, 'ps | grep -c "[c]at /root" || true')).toBe('0');
    await new Promise((r) => setTimeout(r, 8000));
    const lat = await probeSamples(neighbour);

    // The neighbour never stopped, and was never frozen.
    expect(await initStart(neighbour)).toBe(neighbourStart);
    expect((await admin.getSliver(neighbour.id)).state).toBe('running');
    expect(await eventsOf('sliver.frozen', since, neighbour.id)).toHaveLength(0);
    // Slower while the thrasher ran (before the freeze, and after a thaw) than before it, while
    // it was frozen (from a second after the freeze: the freezer takes a moment), and after.
    const before = within(lat, 0, thrashAt);
    const during = [...overlapping(lat, thrashAt, frozenAt), ...(end.type === 'sliver.thawed' ? overlapping(lat, endAt, resetAt) : [])];
    const frozen = within(lat, frozenAt + 1000, endAt);
    const after = within(lat, backAt, Date.now());
    const m = { before: median(before), during: median(during), frozen: median(frozen), after: median(after) };
    console.log(
      `pressure watchdog: thrash → frozen in ${frozenAt - thrashAt} ms (node PSI some ${String(fd.node_psi_some_avg10)} %, sliver ${String(fd.sliver_psi_some_avg10)} %); ${thawNote}; ` +
        `neighbour exec median before ${Math.round(m.before)} (${before.length}) / thrashing ${Math.round(m.during)} (${during.length}) / frozen ${Math.round(m.frozen)} (${frozen.length}) / after ${Math.round(m.after)} (${after.length}) ms`,
    );
    expect(during.length).toBeGreaterThanOrEqual(3);
    expect(frozen.length).toBeGreaterThanOrEqual(3);
    expect(m.before).toBeLessThan(m.during);
    expect(m.frozen).toBeLessThan(m.during);
    expect(m.after).toBeLessThan(m.during);
  }, 600_000);
});
