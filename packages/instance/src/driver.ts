// The instance driver family: how the node agent turns a sliver into a running container or VM,
// behind one small interface with capability flags (callers test flags, not driver names).
import { isIPv4 } from 'node:net';
import { isAbsolute } from 'node:path';
import { InstanceError } from './errors.js';
import type { Psi } from './lxc/cgroup.js';

export interface InstanceCapabilities {
  /** Slivers run in a user namespace (root inside is an unprivileged host uid). */
  unprivileged: boolean;
  freeze: boolean;
  memoryLimit: boolean;
}

export interface InstanceSpec {
  /** Sliver uuid. */
  id: string;
  /** The slice name; becomes the sliver's hostname. */
  hostname: string;
  /** Directory holding the sliver's root filesystem (a btrfs snapshot in production). */
  rootfs: string;
  memoryMb: number;
  /** Relative CPU weight, cgroup v1 scale (2..262144, 1024 = one default share). */
  cpuShares: number;
  /** Hard cap, percent of one CPU (CFS quota over a 100 ms period); null/absent: none. */
  cpuCapPercent?: number | null;
  pids?: number;
  /** Host uid/gid base H of a 65536 range; null = privileged (only if unprivileged is unsupported). */
  idmapBase: number | null;
  /** The rootfs's files are already owned by host ids H + n (a layered root: storage's
   * rootIdShift is H), so the driver mounts it as it is; absent/false: they are owned by the ids
   * the sliver sees, and the driver maps them (an idmapped mount). Only with an idmapBase. */
  rootfsShifted?: boolean;
  /** The sliver's network: an existing interface on the host (created by the network driver) moved
   * into the container as eth0 (lxc.net.0.type = phys), with its address and gateway; null =
   * loopback only. */
  net: { link: string; address: string /* CIDR */; gateway: string } | null;
  /** The image's read-only root (its base subvolume), where a VM driver looks for a kernel the
   * image ships; default: rootfs, read at the first define, before the sliver has run on it. */
  imageRoot?: string;
}

export type InstanceState = 'running' | 'stopped' | 'frozen' | 'absent';

/** The resource limits of a sliver, as a running one holds them in its cgroups. */
export type InstanceLimits = Pick<InstanceSpec, 'id' | 'memoryMb' | 'cpuShares' | 'cpuCapPercent' | 'pids'>;

/** One live limit that is not the one asked for: its cgroup file, the value wanted, the value
 * there (null: unreadable). */
export interface LimitDrift {
  file: string;
  want: string;
  have: string | null;
}

/** Where a driver's check() is: a driver builds slivers only once it is 'ready'. A VM driver's
 * check boots a probe guest and takes seconds, so the agent runs it in the background. */
export type InstanceDriverStatus =
  | { state: 'unchecked' }
  | { state: 'checking' }
  /** accel: the accelerator a VM driver's check chose (the node's `kvm_accel`). */
  | { state: 'ready'; accel?: 'kvm' | 'tcg' }
  | { state: 'failed'; why: string };

export interface InstanceDriver {
  readonly name: string;
  readonly capabilities: InstanceCapabilities;
  /** What check() found so far. */
  readonly status: InstanceDriverStatus;
  /** Checks tools and kernel support once; throws an actionable error naming what is missing. */
  check(): Promise<void>;
  /** Writes or refreshes the sliver's config; idempotent. */
  define(spec: InstanceSpec): Promise<void>;
  start(id: string): Promise<void>;
  stop(id: string, timeoutS?: number): Promise<void>;
  /** Stops at once: every process of the sliver gets SIGKILL, no clean shutdown (the memory
   * watchdog, which must free memory now); a stopped or absent sliver is left as it is. */
  kill(id: string): Promise<void>;
  freeze(id: string): Promise<void>;
  thaw(id: string): Promise<void>;
  state(id: string): Promise<InstanceState>;
  /** The state of every sliver list() names, in one cheap probe (a reconcile pass and a report
   * read all of them). May lag a transition state() would see; lifecycle calls use state(). */
  states(): Promise<Map<string, InstanceState>>;
  /** Runs argv inside the sliver as its root; rejects with a CommandError when it exits non-zero. */
  exec(id: string, argv: string[], input?: string): Promise<{ stdout: string; stderr: string }>;
  /** Stops the sliver if needed and removes every trace (config dir, logs); idempotent. */
  destroy(id: string): Promise<void>;
  /** Ids of the slivers this driver has defined. */
  list(): Promise<string[]>;
  /** Resident memory of the sliver's cgroup in bytes (watchdog, accounting); null when not running. */
  memoryBytes(id: string): Promise<number | null>;
  /** CPU time the sliver has used since it started, seconds (accounting); null when not running. */
  cpuSeconds(id: string): Promise<number | null>;
  /** Processes the kernel killed in the sliver's memory cgroup for reaching its limit, counted
   * since the cgroup was made (the sliver's start); null when not running or the host cannot tell. */
  oomKills?(id: string): Promise<number | null>;
  /** The sliver's own memory pressure (its cgroup's memory.pressure avg10), for the watchdog's
   * freeze; null when not running or the host cannot tell. */
  memoryPressure?(id: string): Promise<Psi | null>;
  /** The live limits of a running or frozen sliver that differ from `limits` (none when it is not
   * running: it takes its config at start). Cheap: a reconcile pass asks it of every sliver. */
  limitDrift?(limits: InstanceLimits): LimitDrift[];
  /** Writes each live limit that differs from `limits` into the running sliver's cgroups; resolves
   * with the files written. Throws an InstanceError 'limits_not_applied' naming every limit the
   * kernel refused (memory lowered below what the sliver holds), after writing the others. */
  applyLimits?(limits: InstanceLimits): Promise<string[]>;
  /** Sets the hostname of a running sliver (a warm-pool spare handed out to a slice); one that is
   * not running takes its config's hostname at start. */
  setHostname?(id: string, hostname: string): Promise<void>;
  /** Path of the sliver's console log, when the driver keeps one (`planetlite sliver log`). */
  consoleLog?(id: string): string;
  /** Why a sliver that was running has stopped by itself, when the driver can tell; else null. */
  exitReason?(id: string): Promise<string | null>;
  /** Whether anything listens on TCP `port` inside the running sliver (its sshd on 22), read from
   * the host without running anything in it; null when it is not running or the host cannot tell. */
  listening?(id: string, port: number): Promise<boolean | null>;
}

/** Runs a driver's check, keeping its status: checking, then ready or failed (and rethrown). */
export async function trackCheck(set: (s: InstanceDriverStatus) => void, check: () => Promise<Omit<Extract<InstanceDriverStatus, { state: 'ready' }>, 'state'> | void>): Promise<void> {
  set({ state: 'checking' });
  try {
    set({ state: 'ready', ...(await check()) });
  } catch (err) {
    set({ state: 'failed', why: err instanceof Error ? err.message : String(err) });
    throw err;
  }
}

/** A spec the driver refuses before touching the host. */
export class InvalidSpecError extends InstanceError {
  constructor(message: string) {
    super('invalid_spec', message);
    this.name = 'InvalidSpecError';
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// Slice names are PlanetLab-style (site_slice): letters, digits, '_', '-', '.'; a hostname is at most 64 bytes.
const HOSTNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
// A Linux interface name: at most 15 bytes, no '/', ':' or whitespace.
const IFNAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
export const IDMAP_SIZE = 65536;

export function isSliverId(id: string): boolean {
  return UUID.test(id);
}

/** A slice name that can be a sliver's hostname. */
export function isHostname(name: string): boolean {
  return HOSTNAME.test(name);
}

/** Throws InvalidSpecError naming the first bad field. Every value that reaches a config file is
 * checked here, so no field can inject a line into it. */
export function validateInstanceSpec(spec: InstanceSpec): void {
  const bad = (field: string, why: string): never => {
    throw new InvalidSpecError(`instance spec ${field} ${why}`);
  };
  if (!isSliverId(spec.id)) bad('id', `must be a lowercase uuid, got ${JSON.stringify(spec.id)}`);
  if (!HOSTNAME.test(spec.hostname)) bad('hostname', `must be 1-63 of [A-Za-z0-9_.-], got ${JSON.stringify(spec.hostname)}`);
  if (!isAbsolute(spec.rootfs) || /[\n\r\0]/.test(spec.rootfs) || spec.rootfs === '/')
    bad('rootfs', `must be an absolute directory other than /, got ${JSON.stringify(spec.rootfs)}`);
  if (spec.imageRoot !== undefined && (!isAbsolute(spec.imageRoot) || /[\n\r\0]/.test(spec.imageRoot)))
    bad('imageRoot', `must be an absolute directory, got ${JSON.stringify(spec.imageRoot)}`);
  if (!Number.isSafeInteger(spec.memoryMb) || spec.memoryMb < 8 || spec.memoryMb > 1 << 22)
    bad('memoryMb', `must be an integer from 8 to ${1 << 22}, got ${spec.memoryMb}`);
  if (!Number.isSafeInteger(spec.cpuShares) || spec.cpuShares < 2 || spec.cpuShares > 262144)
    bad('cpuShares', `must be an integer from 2 to 262144, got ${spec.cpuShares}`);
  if (spec.cpuCapPercent != null && (!Number.isSafeInteger(spec.cpuCapPercent) || spec.cpuCapPercent < 1 || spec.cpuCapPercent > 12_800))
    bad('cpuCapPercent', `must be an integer from 1 to 12800, or null, got ${spec.cpuCapPercent}`);
  if (spec.pids !== undefined && (!Number.isSafeInteger(spec.pids) || spec.pids < 8 || spec.pids > 4194304))
    bad('pids', `must be an integer from 8 to 4194304, got ${spec.pids}`);
  if (spec.idmapBase !== null) {
    // Host ids 0..65535 are the host's own users; the range must fit below 2^32 - 1 (the invalid id).
    const max = 2 ** 32 - 1 - IDMAP_SIZE;
    if (!Number.isSafeInteger(spec.idmapBase) || spec.idmapBase < IDMAP_SIZE || spec.idmapBase > max)
      bad('idmapBase', `must be an integer from ${IDMAP_SIZE} to ${max}, got ${spec.idmapBase}`);
  }
  if (spec.net !== null) {
    const { link, address, gateway } = spec.net;
    if (!IFNAME.test(link)) bad('net.link', `must be an interface name (1-15 of [A-Za-z0-9_.-]), got ${JSON.stringify(link)}`);
    const [ip, prefix, ...rest] = address.split('/');
    const bits = Number(prefix);
    if (rest.length || !ip || !isIPv4(ip) || !/^\d{1,2}$/.test(prefix ?? '') || bits < 1 || bits > 32)
      bad('net.address', `must be IPv4 CIDR like 10.0.0.2/30, got ${JSON.stringify(address)}`);
    if (!isIPv4(gateway)) bad('net.gateway', `must be an IPv4 address, got ${JSON.stringify(gateway)}`);
  }
}
