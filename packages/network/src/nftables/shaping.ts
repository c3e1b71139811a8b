// Per-sliver rate caps with tc HTB, all on the host side of the sliver's link (root in the
// sliver has CAP_NET_ADMIN in its own namespace and could undo anything set there):
//   inbound  (to the sliver):   HTB as the root qdisc of the host end plh…, which sends to the sliver;
//   outbound (from the sliver): an ingress qdisc on plh… whose u32 match-all filter redirects every
//                               packet to the sliver's ifb pli…, with HTB as the ifb's root qdisc;
//                               the ifb hands packets back to plh…'s receive path, so nftables
//                               still sees them arrive on plh… (matchall is not in every kernel; u32 is).
// Rendering is pure (unit-tested); applyLimit() reads the state, renders and runs it.
import type { SliverCounters, SliverRate } from '../driver.js';
import { NetworkError } from '../errors.js';
import { ipBatch, readLinkStats, type Exec, type Link, type LinkStats } from './devices.js';
import { ALIAS_PREFIX, DEVICE_PATTERN, HOST_PREFIX } from './names.js';

/** Smallest cap, 1 kB/s: the registry's floor for net_kbps. */
export const MIN_KBPS = 8;
/** Largest cap, 10 Gbit/s: more than a veth carries here (≈ 6 Gbit/s uncapped), and within HTB's 32-bit byte rate. */
export const MAX_KBPS = 10_000_000;

/**
 * HTB's burst (bytes a class may send at once after idling) is rate/HZ + MTU: what the rate earns
 * in one timer tick plus one packet. tc computes its default the same way but takes HZ from
 * /proc/net/psched, which says 10⁹ on a high-resolution-timer kernel, so its default is about one
 * MTU at any rate: a dequeue that runs late loses the credit it earned, and a busy host falls short
 * of the cap (here, 100 Mbit/s with both CPUs busy: 93.4 % with tc's default, 95.6 % with this;
 * ≈ 95 % is the cap minus TCP/IP headers). HZ 100, the lowest CONFIG_HZ, covers one tick on any
 * kernel; 10 ms of extra burst is 0.2 % of a 5 s measurement. At low rates this is tc's default.
 */
const BURST_HZ = 100;
/** tc's own default MTU for the burst formula. */
const BURST_MTU = 1600;
/**
 * Set explicitly so the kernel does not derive it from r2q (rate/10), which logs "quantum of class
 * is big/small" above 16 Mbit/s and below 80 kbit/s. Each HTB here has one class, so the quantum
 * (how much a class sends before its siblings get a turn) changes nothing else; one Ethernet frame.
 */
const QUANTUM = 1514;
/**
 * The leaf queue, in packets: the kernel's txqueuelen for Ethernet and veth. Explicit because an
 * ifb's txqueuelen is 32, and HTB's default leaf would take that, queueing the two directions differently.
 */
const QUEUE_PACKETS = 1000;

/** Returns the rate when both directions are null or an integer in [MIN_KBPS, MAX_KBPS]; throws otherwise. */
export function validateRate(rate: SliverRate): SliverRate {
  if (typeof rate !== 'object' || rate === null) throw new NetworkError('invalid_spec', `rate must be { inKbps, outKbps }: got ${JSON.stringify(rate)}`);
  for (const key of ['inKbps', 'outKbps'] as const) {
    const v: unknown = rate[key];
    if (v === null) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < MIN_KBPS || v > MAX_KBPS) {
      throw new NetworkError('invalid_spec', `${key} must be an integer number of kbit/s from ${MIN_KBPS} to ${MAX_KBPS}, or null for no cap: got ${JSON.stringify(v) ?? String(v)}`);
    }
  }
  return { inKbps: rate.inKbps, outKbps: rate.outKbps };
}

/** HTB class parameters for a cap of kbps kbit/s. */
export function htbParams(kbps: number): { rate: string; burst: number; quantum: number } {
  return { rate: `${kbps}kbit`, burst: Math.ceil((kbps * 125) / BURST_HZ) + BURST_MTU, quantum: QUANTUM };
}

/** tc batch lines (without the leading `tc`) that cap dev's egress at kbps; haveRoot: our HTB is already its root. */
export function renderShape(dev: string, kbps: number, haveRoot: boolean): string[] {
  const p = htbParams(kbps);
  const lines: string[] = [];
  // An HTB root cannot be `replace`d by another HTB (no change operation), so it is added only
  // when missing; `default 1` sends every packet to the one class, with no filter.
  if (!haveRoot) lines.push(`qdisc replace dev ${dev} root handle 1: htb default 1`);
  // `class replace` changes an existing class in place: the queue and the traffic carry on.
  lines.push(
    `class replace dev ${dev} parent 1: classid 1:1 htb rate ${p.rate} ceil ${p.rate} burst ${p.burst} cburst ${p.burst} quantum ${p.quantum}`,
    `qdisc replace dev ${dev} parent 1:1 handle 10: pfifo limit ${QUEUE_PACKETS}`,
  );
  return lines;
}

/** tc batch lines that send everything hostIf receives through ifb's egress first; idempotent. */
export function renderRedirect(hostIf: string, ifb: string): string[] {
  return [
    `qdisc replace dev ${hostIf} handle ffff: ingress`,
    `filter replace dev ${hostIf} parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0 action mirred egress redirect dev ${ifb}`,
  ];
}

/** What limit() needs to know of one device's qdiscs. */
export interface DeviceQdiscs {
  /** Root is our HTB (handle 1:). */
  htbRoot: boolean;
  /** Has an ingress qdisc. */
  ingress: boolean;
}

interface TcQdiscJson {
  kind?: string;
  handle?: string;
  dev?: string;
  root?: boolean;
}

/** Parses `tc -j qdisc show` (every device of the namespace). */
export function parseQdiscs(stdout: string): Map<string, DeviceQdiscs> {
  return byDevice(JSON.parse(stdout || '[]') as TcQdiscJson[]);
}

function byDevice(qdiscs: TcQdiscJson[]): Map<string, DeviceQdiscs> {
  const out = new Map<string, DeviceQdiscs>();
  for (const q of qdiscs) {
    if (!q.dev) continue;
    const d = out.get(q.dev) ?? { htbRoot: false, ingress: false };
    if (q.root && q.kind === 'htb' && q.handle === '1:') d.htbRoot = true;
    if (q.kind === 'ingress') d.ingress = true;
    out.set(q.dev, d);
  }
  return out;
}

export interface ShapingNames {
  hostIf: string;
  ifb: string;
  /** The alias every device of this sliver carries. */
  alias: string;
}

/** The host as limit() found it; null = the device does not exist. */
export interface ShapingState {
  host: DeviceQdiscs | null;
  ifb: (DeviceQdiscs & Pick<Link, 'alias' | 'up'>) | null;
}

/** `ip` lines to run before the tc lines (make the ifb), the tc lines, then `ip` lines after (remove it). */
export interface ShapingPlan {
  ipBefore: string[];
  tc: string[];
  ipAfter: string[];
}

/** The commands that take the sliver from state to rate. Throws on an invalid rate, or a cap for a missing link. */
export function renderLimit(names: ShapingNames, state: ShapingState, rate: SliverRate): ShapingPlan {
  const { inKbps, outKbps } = validateRate(rate);
  const { hostIf, ifb, alias } = names;
  const plan: ShapingPlan = { ipBefore: [], tc: [], ipAfter: [] };
  if (!state.host) {
    if (inKbps !== null || outKbps !== null) throw new NetworkError('not_attached', `sliver link ${hostIf} does not exist: attach the sliver before limiting it`);
    if (state.ifb) plan.ipAfter.push(`link del dev ${ifb}`); // left over from a crash
    return plan;
  }
  if (inKbps !== null) plan.tc.push(...renderShape(hostIf, inKbps, state.host.htbRoot));
  else if (state.host.htbRoot) plan.tc.push(`qdisc del dev ${hostIf} root`);
  if (outKbps !== null) {
    // Names and aliases carry no spaces or quotes (hex, uuid), so batch lines need no quoting.
    if (!state.ifb) plan.ipBefore.push(`link add ${ifb} type ifb`);
    if (state.ifb?.alias !== alias) plan.ipBefore.push(`link set dev ${ifb} alias ${alias}`);
    if (!state.ifb?.up) plan.ipBefore.push(`link set dev ${ifb} up`);
    // The ifb is capped before any packet is redirected to it.
    plan.tc.push(...renderShape(ifb, outKbps, state.ifb?.htbRoot ?? false), ...renderRedirect(hostIf, ifb));
  } else {
    // The redirect goes first: a packet sent to a deleted ifb is dropped.
    if (state.host.ingress) plan.tc.push(`qdisc del dev ${hostIf} ingress`);
    if (state.ifb) plan.ipAfter.push(`link del dev ${ifb}`);
  }
  return plan;
}

/**
 * What of a sliver's caps the host does not hold as `rate` asks, in words; null when it does.
 * Only the qdiscs and devices are compared (one `tc qdisc show` for every sliver); a class rate
 * changed by hand is not seen.
 */
export function shapingDrift(names: ShapingNames, state: ShapingState, rate: SliverRate): string | null {
  const { inKbps, outKbps } = rate;
  const host = state.host;
  if (!host) return inKbps !== null || outKbps !== null ? `no link ${names.hostIf}` : state.ifb ? `a stale ${names.ifb}` : null;
  if (inKbps !== null && !host.htbRoot) return `no inbound cap on ${names.hostIf}`;
  if (inKbps === null && host.htbRoot) return `a lifted inbound cap still on ${names.hostIf}`;
  if (outKbps !== null && (!state.ifb || !state.ifb.htbRoot || !state.ifb.up || !host.ingress)) return `no outbound cap through ${names.ifb}`;
  if (outKbps === null && (state.ifb || host.ingress)) return `a lifted outbound cap still through ${names.ifb}`;
  return null;
}

/** Reads the qdiscs (unless given: a device just made has none), renders and runs the plan. The
 * caller has read the links and checked the names are this sliver's. */
export async function applyLimit(exec: Exec, names: ShapingNames, rate: SliverRate, links: Map<string, Link>, known?: Map<string, DeviceQdiscs>): Promise<void> {
  validateRate(rate); // before any command
  const host = links.get(names.hostIf);
  const ifb = links.get(names.ifb);
  const qdiscs = known ?? (await readQdiscsOf(exec, [host, ifb].flatMap((l) => (l ? [l.name] : []))));
  const noQdiscs: DeviceQdiscs = { htbRoot: false, ingress: false };
  const plan = renderLimit(names, {
    host: host ? (qdiscs.get(names.hostIf) ?? noQdiscs) : null,
    ifb: ifb ? { ...(qdiscs.get(names.ifb) ?? noQdiscs), alias: ifb.alias, up: ifb.up } : null,
  }, rate);
  await ipBatch(exec, plan.ipBefore);
  try {
    await tcBatch(exec, plan.tc);
  } catch (err) {
    throw new NetworkError('missing_kernel_feature', `tc refused the rate caps of ${names.hostIf}; the kernel needs HTB, ingress, u32, mirred and ifb (sch_htb sch_ingress cls_u32 act_mirred ifb): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  await ipBatch(exec, plan.ipAfter);
}

/** The qdiscs of these devices (which exist), in one command whatever the number of devices on the node. */
async function readQdiscsOf(exec: Exec, devices: readonly string[]): Promise<Map<string, DeviceQdiscs>> {
  if (!devices.length) return new Map();
  const out = await exec('tc', ['-j', '-batch', '-'], { input: devices.map((d) => `qdisc show dev ${d}`).join('\n') + '\n' });
  // One array a command, in order; filtered by device, tc leaves the device out of each entry.
  const lines = out.stdout.split('\n').filter((l) => l.startsWith('['));
  if (lines.length !== devices.length) throw new Error(`tc printed ${lines.length} qdisc lists for ${devices.length} devices`);
  return byDevice(lines.flatMap((l, i) => (JSON.parse(l) as TcQdiscJson[]).map((q) => ({ ...q, dev: devices[i] }))));
}

/** Runs tc commands (one per line, without the leading `tc`) as one batch; stops at the first failure. */
export async function tcBatch(exec: Exec, commands: readonly string[]): Promise<void> {
  if (commands.length) await exec('tc', ['-batch', '-'], { input: commands.join('\n') + '\n' });
}

/**
 * Per-sliver counters from the host ends' statistics: the host end sends what the sliver
 * receives and receives what it sends. Only devices carrying a sliver alias count (as in listAttached()).
 */
export function sliverCounters(stats: Map<string, LinkStats>): Map<string, SliverCounters> {
  const out = new Map<string, SliverCounters>();
  for (const s of stats.values()) {
    if (!s.name.startsWith(HOST_PREFIX) || !DEVICE_PATTERN.test(s.name) || !s.alias?.startsWith(ALIAS_PREFIX)) continue;
    out.set(s.alias.slice(ALIAS_PREFIX.length), { rxBytes: s.txBytes, txBytes: s.rxBytes });
  }
  return out;
}

export async function readCounters(exec: Exec): Promise<Map<string, SliverCounters>> {
  return sliverCounters(await readLinkStats(exec));
}
