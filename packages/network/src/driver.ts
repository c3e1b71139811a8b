// The network driver family: what the node agent needs to give a sliver an address, NAT out
// and a forwarded port window in, behind one small interface with capability flags.
export interface NetworkCapabilities {
  /** Outbound MASQUERADE and the inbound DNAT port window. */
  nat: boolean;
  /** Slivers cannot reach each other or the node's own services except through public ports. */
  isolation: boolean;
  /** Can give a KVM sliver a tap device (kind 'tap'). */
  tap: boolean;
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
  /** Enables forwarding and rewrites the driver's whole table from this list in one atomic
   * transaction. Idempotent; call it at start and after every change. */
  apply(slivers: SliverNetSpec[]): Promise<void>;
  /** Creates the sliver's host-side device(s) with deterministic names and addresses; idempotent. */
  attach(spec: SliverNetSpec): Promise<SliverNet>;
  /** Removes the sliver's devices; idempotent. */
  detach(id: string): Promise<void>;
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
