// Private `ip` wrappers for the sliver links: one JSON read of every link or of a sliver's own,
// and changes sent as one `ip -batch -`, so an attach costs two commands (each pays a process, and
// nsenter in a namespace) whatever the number of slivers.
import { CommandError, type RunOptions, type RunResult } from '@planetlite/host';

/** Runs a host command in the driver's namespace (run() underneath). */
export type Exec = (command: string, args: readonly string[], opts?: RunOptions) => Promise<RunResult>;

export interface Link {
  name: string;
  alias: string | null;
  /** 'veth', 'tun', … (from `ip -d`); null for plain devices. */
  kind: string | null;
  up: boolean;
  /** IPv4 addresses as `a.b.c.d/n`. */
  ipv4: string[];
}

interface IpAddrJson {
  ifname?: string;
  ifalias?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }>;
}

/** Every link of the namespace by name, with alias, kind, admin state and IPv4 addresses. */
export async function readLinks(exec: Exec): Promise<Map<string, Link>> {
  return parseLinks((await again(() => exec('ip', ['-d', '-j', 'addr', 'show']))).stdout);
}

/** A dump that links or addresses changed under (another sliver's link made meanwhile) is refused
 * by the kernel as inconsistent ("Dump was interrupted"): read again, a few times. */
const INTERRUPTED = /Dump was interrupted/;
async function again<T extends { stderr: string }>(read: () => Promise<T>, tries = 5): Promise<T> {
  for (let i = 1; ; i++) {
    let out: T;
    try {
      out = await read();
    } catch (err) {
      if (i < tries && err instanceof CommandError && INTERRUPTED.test(err.stderr)) continue;
      throw err;
    }
    if (i < tries && INTERRUPTED.test(out.stderr)) continue;
    return out;
  }
}

/** Parses `ip -d -j addr show`. */
function parseLinks(stdout: string): Map<string, Link> {
  const links = new Map<string, Link>();
  for (const j of JSON.parse(stdout || '[]') as IpAddrJson[]) {
    if (!j.ifname) continue;
    links.set(j.ifname, {
      name: j.ifname,
      alias: j.ifalias ?? null,
      kind: j.linkinfo?.info_kind ?? null,
      up: j.flags?.includes('UP') ?? false,
      ipv4: (j.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
    });
  }
  return links;
}

/**
 * The named links that exist, read in one command that costs the same however many links the
 * namespace has (readLinks lists them all). A name with no link is left out.
 */
export async function readLinksOf(exec: Exec, names: readonly string[]): Promise<Map<string, Link>> {
  const links = new Map<string, Link>();
  if (!names.length) return links;
  // -force goes on past a missing device, and then exits 1; each command prints its own array.
  const out = await again(() => exec('ip', ['-force', '-d', '-j', '-batch', '-'], { input: names.map((n) => `addr show dev ${n}`).join('\n') + '\n', allowExit: [1] }));
  const other = out.stderr.split('\n').filter((l) => l && !/^Device ".*" does not exist\.$/.test(l) && !/^Command failed -:\d+$/.test(l));
  if (other.length) throw new CommandError('ip', ['-force', '-d', '-j', '-batch', '-'], out.exitCode, out.stderr, 'could not read links');
  for (const line of out.stdout.split('\n')) if (line.startsWith('[')) for (const [name, link] of parseLinks(line)) if (names.includes(name)) links.set(name, link);
  return links;
}

/** A link's byte counters (since the device was made) and its alias. */
export interface LinkStats {
  name: string;
  alias: string | null;
  rxBytes: number;
  txBytes: number;
}

interface IpStatsJson {
  ifname?: string;
  ifalias?: string;
  stats64?: { rx?: { bytes?: number }; tx?: { bytes?: number } };
}

/** Every link's byte counters, in one command. */
export async function readLinkStats(exec: Exec): Promise<Map<string, LinkStats>> {
  return parseLinkStats((await again(() => exec('ip', ['-s', '-j', 'link', 'show']))).stdout);
}

/** Parses `ip -s -j link show`. */
export function parseLinkStats(stdout: string): Map<string, LinkStats> {
  const out = new Map<string, LinkStats>();
  for (const j of JSON.parse(stdout || '[]') as IpStatsJson[]) {
    if (!j.ifname) continue;
    out.set(j.ifname, { name: j.ifname, alias: j.ifalias ?? null, rxBytes: j.stats64?.rx?.bytes ?? 0, txBytes: j.stats64?.tx?.bytes ?? 0 });
  }
  return out;
}

/** Runs `ip` commands (one per line, without the leading `ip`) as one batch; stops at the first failure. */
export async function ipBatch(exec: Exec, commands: readonly string[]): Promise<void> {
  if (commands.length) await exec('ip', ['-batch', '-'], { input: commands.join('\n') + '\n' });
}
