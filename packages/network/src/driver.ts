// The network driver family: what the node agent needs to give a sliver an address, NAT out
// and a forwarded port window in, behind one small interface with capability flags.
export interface NetworkCapabilities {
  /** Outbound MASQUERADE and the inbound DNAT port window. */
  nat: boolean;
  /** Slivers cannot reach each other or the node's own services except through public ports. */
  isolation: boolean;
  /** Can give a KVM sliver a tap device (kind 'tap'). */
  tap: boolean;
  /** limit() caps a sliver's rates live, without a restart. */
  rateLimit: boolean;
}

/** A sliver's rate caps in kbit/s (1 kbit = 1000 bit); null = no cap in that direction. */
export interface SliverRate {
  /** To the sliver (what it downloads). */
  inKbps: number | null;
  /** From the sliver (what it uploads). */
  outKbps: number | null;
}

/** Bytes through a sliver's link since its host-side device was made, as the sliver sees them. */
export interface SliverCounters {
  /** Bytes the sliver received. */
  rxBytes: number;
  /** Bytes the sliver sent, counted before its outbound cap (so they include what the cap dropped). */
  txBytes: number;
}

export interface PortWindow {
  /** first → sliver:22; first+1..last → the same port numbers on the sliver. */
  first: number;
  last: number;
}

export interface SliverNetSpec {
  /** Sliver uuid. */
  id: string;
  /** Index of the sliver's /30 in the sliver subnet (the agent allocates it). */
  slot: number;
  ports: PortWindow;
  /** 'tap' for KVM slivers: the host end is a tap device that qemu opens. */
  kind: 'veth' | 'tap';
}

export interface SliverNet {
  id: string;
  /** Host end: carries hostAddress; the sliver's gateway. */
  hostIf: string;
  /** Veth peer, to be moved into the container (LXC `phys`); null for tap. */
  peerIf: string | null;
  hostAddress: string;
  sliverAddress: string;
  prefix: number;
  /** = hostAddress */
  gateway: string;
}

export interface NetworkDriver {
  readonly name: string;
  readonly capabilities: NetworkCapabilities;
  /** Tools and kernel support present; throws an error that says what to install or fix. */
  check(): Promise<void>;
  /** Enables forwarding and brings the driver's table to this list of slivers in one atomic
   * transaction: only what changed since this object's last apply, or the whole table the first
   * time and with `whole` (after the table was seen changed by someone else). Idempotent; call it
   * at start and after every change. */
  apply(slivers: SliverNetSpec[], opts?: { whole?: boolean }): Promise<void>;
  /** Creates the sliver's host-side device(s) with deterministic names and addresses; idempotent. */
  attach(spec: SliverNetSpec): Promise<SliverNet>;
  /** Removes the sliver's devices (shaping included); idempotent. */
  detach(id: string): Promise<void>;
  /**
   * Sets, changes or removes the sliver's rate caps on the running sliver, without interrupting
   * its traffic; idempotent. Each rate is an integer from 8 to 10 000 000 kbit/s, or null for no
   * cap. Call it after attach(): a device that attach() (re)creates starts without caps. Throws,
   * before touching the host, on an invalid rate, and when a cap is asked for a sliver that is
   * not attached (removing caps from one is a no-op).
   */
  limit(id: string, rate: SliverRate): Promise<void>;
  /**
   * Byte counters of every attached sliver, by id, read in one command. They count from the
   * moment attach() made the device, so they restart at zero when it is made again.
   */
  counters(): Promise<Map<string, SliverCounters>>;
  /** Slivers (of those given, with the caps they should have) whose caps the host does not hold
   * now, each with what differs: read in one command for all of them, every pass. */
  rateDrift?(rates: ReadonlyMap<string, SliverRate>): Promise<Map<string, string>>;
  /** The driver's table as the host holds it now (a listing to compare between passes: a
   * table changed or flushed by someone else is written again); '' when there is none. */
  tableState?(): Promise<string>;
  /** Ids of slivers whose devices exist now (finds leaks after a crash). */
  listAttached(): Promise<string[]>;
  /** Removes the table and every device this driver made (uninstall, tests). */
  teardown(): Promise<void>;
  address(spec: Pick<SliverNetSpec, 'slot'>): { hostAddress: string; sliverAddress: string; prefix: number };
}

export interface NetworkDriverOptions {
  /** The node's address experimenters connect to (IPv4, configured on this node). */
  publicAddress: string;
  /** Interface carrying publicAddress; when given, check() verifies it. */
  publicInterface?: string;
  /** IPv4 CIDR carved into one /30 per slot, e.g. 10.200.0.0/16. */
  sliverSubnet: string;
  /** Run every command in network namespace NETNS (`ip -n`, nsenter): a node namespace in tests and multi-node demos. */
  netns?: string;
  /** nftables table name (family inet); default 'planetlite'. */
  tableName?: string;
}
