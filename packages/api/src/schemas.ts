// The v1 REST contract as TypeBox schemas: the registry validates and documents with them,
// the client and the CLI take their types from them.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { SLIVER_CONSOLE_MAX_BYTES } from './constants.js';
export * from './constants.js';

const Strict = { additionalProperties: false } as const;

export const LOGIN_BASE_PATTERN = '^[a-z][a-z0-9]{1,19}$';
export const SLICE_NAME_PATTERN = '^[a-z][a-z0-9]{1,19}_[a-z0-9_]{1,30}$';
export const IMAGE_NAME_PATTERN = '^[a-z0-9][a-z0-9._-]{0,63}$';
export const ROLES = ['admin', 'pi', 'tech', 'user'] as const;
export const SLIVER_STATES = ['pending', 'provisioning', 'running', 'stopped', 'failed', 'deleting'] as const;
export const SLIVER_ACTIONS = ['start', 'stop', 'restart', 'reset', 'freeze', 'thaw'] as const;
export const NODE_ADMIN_STATES = ['active', 'draining', 'decommissioning', 'decommissioned'] as const;
export const NODE_ACTIONS = ['drain', 'undrain', 'decommission'] as const;
export const SLICE_KINDS = ['lxc', 'kvm'] as const;
/** A sha256 digest as 64 lower-case hex digits (an image archive's, as published). */
export const SHA256_HEX_PATTERN = '^[0-9a-f]{64}$';
/** What the node's memory watchdog does to a sliver it resets: start it again as it was, or from a fresh copy of its image. */
export const MEMORY_RESETS = ['restart', 'restore'] as const;

const Timestamp = Type.String({ format: 'date-time', description: 'RFC 3339, UTC' });
const Uuid = Type.String({ format: 'uuid', description: 'lowercase, hyphenated' });
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
// A string enum as JSON Schema `enum` (not a union of literals): clearer errors and OpenAPI.
const Enum = <T extends readonly string[]>(values: T, description?: string) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...(description ? { description } : {}) });

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String(),
    code: Type.String({ description: 'stable machine-readable error code, e.g. slice_quota_exceeded' }),
    instance: Type.Optional(Type.String()),
  },
  { title: 'Problem', description: 'RFC 9457 problem details' },
);
export type Problem = Static<typeof Problem>;

// ---- auth and users --------------------------------------------------------------------------
export const Role = Enum(ROLES);
export type Role = Static<typeof Role>;

export const User = Type.Object(
  {
    id: Uuid,
    email: Type.String(),
    name: Type.String(),
    site: Nullable(Type.String()),
    roles: Type.Array(Role),
    created_at: Timestamp,
  },
  { title: 'User' },
);
export type User = Static<typeof User>;

export const LoginRequest = Type.Object(
  {
    email: Type.String({ minLength: 3, maxLength: 254 }),
    password: Type.String({ minLength: 1, maxLength: 1024 }),
    cookie: Type.Optional(Type.Boolean({
      description: 'true: a browser session. The token goes into an httpOnly, Secure, SameSite=Strict cookie (planetlite_session) instead of the answer; calls that change state with it must send "X-Requested-With: planetlite"',
    })),
  },
  Strict,
);
export type LoginRequest = Static<typeof LoginRequest>;
export const LoginResponse = Type.Object({
  token: Type.Optional(Type.String({ description: 'the bearer token; absent for a cookie login, whose token only the cookie holds' })),
  expires_at: Timestamp,
  user: User,
});
export type LoginResponse = Static<typeof LoginResponse>;

export const UserCreate = Type.Object(
  {
    email: Type.String({ format: 'email', maxLength: 254 }),
    name: Type.String({ minLength: 1, maxLength: 200 }),
    password: Type.String({ minLength: 8, maxLength: 1024 }),
    site: Type.String({ pattern: LOGIN_BASE_PATTERN }),
    roles: Type.Array(Role, { minItems: 1, uniqueItems: true }),
  },
  Strict,
);
export type UserCreate = Static<typeof UserCreate>;

export const SshKey = Type.Object(
  { id: Uuid, user_id: Uuid, type: Type.String(), fingerprint: Type.String(), comment: Type.String(), key: Type.String(), created_at: Timestamp },
  { title: 'SshKey' },
);
export type SshKey = Static<typeof SshKey>;
export const KeyCreate = Type.Object({ key: Type.String({ minLength: 1, maxLength: 16384, description: 'one OpenSSH public key line' }) }, Strict);
export type KeyCreate = Static<typeof KeyCreate>;

// ---- sites -----------------------------------------------------------------------------------
export const Site = Type.Object(
  {
    login_base: Type.String(),
    name: Type.String(),
    max_slices: Type.Integer(),
    max_slivers: Type.Integer(),
    enabled: Type.Boolean(),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Site' },
);
export type Site = Static<typeof Site>;
export const SiteCreate = Type.Object(
  {
    login_base: Type.String({ pattern: LOGIN_BASE_PATTERN, description: 'short site prefix, e.g. princeton' }),
    name: Type.String({ minLength: 1, maxLength: 200 }),
    max_slices: Type.Integer({ minimum: 0, maximum: 100000 }),
    max_slivers: Type.Integer({ minimum: 0, maximum: 1000000 }),
  },
  Strict,
);
export type SiteCreate = Static<typeof SiteCreate>;
export const SitePatch = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    max_slices: Type.Optional(Type.Integer({ minimum: 0, maximum: 100000 })),
    max_slivers: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000000 })),
    enabled: Type.Optional(Type.Boolean()),
  },
  { ...Strict, minProperties: 1 },
);
export type SitePatch = Static<typeof SitePatch>;

// ---- nodes -----------------------------------------------------------------------------------
/** Machine architectures, as uname -m names them (x86_64, aarch64): of images and of nodes. */
export const IMAGE_ARCH_PATTERN = '^[a-z0-9_]{1,32}$';
export const NodeCapabilities = Type.Object(
  {
    lxc: Type.Boolean(),
    kvm: Type.Boolean(),
    kvm_accel: Nullable(Enum(['kvm', 'tcg'] as const)),
    arch: Type.Optional(Type.String({ pattern: IMAGE_ARCH_PATTERN, description: 'machine architecture (uname -m), e.g. x86_64; slivers of images of another are not placed here' })),
  },
  Strict,
);
export type NodeCapabilities = Static<typeof NodeCapabilities>;
export const NodeResources = Type.Object(
  {
    cpus: Type.Integer({ minimum: 1, maximum: 4096 }),
    memory_mb: Type.Integer({ minimum: 1, maximum: 1 << 30 }),
    disk_mb: Type.Integer({ minimum: 1, maximum: 2 ** 40 }),
  },
  Strict,
);
export type NodeResources = Static<typeof NodeResources>;
export const PortRange = Type.Object({ first: Type.Integer({ minimum: 1024, maximum: 65535 }), last: Type.Integer({ minimum: 1024, maximum: 65535 }) }, Strict);
export type PortRange = Static<typeof PortRange>;
export const NodeImage = Type.Object({
  image: Type.String(),
  state: Type.String(),
  progress: Type.Optional(Type.Number()),
  /** From other nodes over BitTorrent. */
  bytes_from_peers: Type.Integer(),
  /** From the registry over HTTP (the web seed, or a plain download). */
  bytes_from_webseed: Type.Integer(),
  /** From the registry's own BitTorrent seeder (reported by agents since images went peer-to-peer). */
  bytes_from_registry: Type.Optional(Type.Integer()),
});
export type NodeImage = Static<typeof NodeImage>;
/** The node's ssh front door: `ssh -p PORT SLICE@ADDRESS` lands in the slice's sliver there. */
export const FrontDoor = Type.Object(
  {
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    host_key: Type.String({ maxLength: 2000, pattern: '^[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,2}$', description: "the front door's OpenSSH host public key, as known_hosts takes it" }),
    fingerprint: Type.String({ description: "SHA256 fingerprint of host_key, as ssh prints it" }),
  },
  { title: 'FrontDoor' },
);
export type FrontDoor = Static<typeof FrontDoor>;
/** Where a node stands, as its site says: a city and WGS 84 coordinates (the admin's map draws it). */
export const NodeLocation = Type.Object(
  {
    city: Type.String({ minLength: 1, maxLength: 100, pattern: '^(?!\\s)(?!.*\\s$)[^\\u0000-\\u001f\\u007f-\\u009f]+$', description: 'printable characters: no control characters, no space at either end' }),
    latitude: Type.Number({ minimum: -90, maximum: 90, description: 'degrees north (south negative)' }),
    longitude: Type.Number({ minimum: -180, maximum: 180, description: 'degrees east (west negative)' }),
  },
  { ...Strict, title: 'NodeLocation' },
);
export type NodeLocation = Static<typeof NodeLocation>;
/** What a node's site (its tech or pi) or an admin may change of a node. */
export const NodePatch = Type.Object(
  { location: Type.Optional(Nullable(NodeLocation)) },
  { ...Strict, minProperties: 1, description: 'location: null clears it' },
);
export type NodePatch = Static<typeof NodePatch>;
export const Node = Type.Object(
  {
    id: Uuid,
    hostname: Type.String(),
    site: Type.String(),
    address: Type.String(),
    state: Enum(['online', 'offline'] as const),
    capabilities: NodeCapabilities,
    resources: NodeResources,
    port_window: PortRange,
    last_seen: Nullable(Timestamp),
    images: Type.Array(NodeImage),
    created_at: Timestamp,
    admin_state: Enum(
      NODE_ADMIN_STATES,
      'what its site wants of it: active; draining (no new slivers, existing ones keep running); decommissioning (slivers being torn down); decommissioned (key revoked, kept for history)',
    ),
    /** Set when the node's key was revoked (decommission, or DELETE /v1/nodes/{id}/key); it must enroll again. */
    key_revoked_at: Nullable(Timestamp),
    slivers: Type.Optional(Type.Integer({ description: 'slivers on the node now, of every slice (in lists and GET of one node)' })),
    free_ports: Type.Optional(Type.Integer({ description: 'ports of its port_window no sliver holds yet' })),
    spares: Type.Optional(Type.Integer({ minimum: 0, description: 'spare slivers its warm pool keeps ready, as its last report listed them: a new sliver of a slice of that image and kind starts from one' })),
    /** The ssh front door as the node last reported it; null: none. */
    front_door: Nullable(FrontDoor),
    /** Set by its site or an admin (PATCH /v1/nodes/{id}); null: not said. */
    location: Nullable(NodeLocation),
  },
  { title: 'Node' },
);
export type Node = Static<typeof Node>;
export const NodeAction = Type.Object(
  {
    action: Enum(NODE_ACTIONS),
    force: Type.Optional(Type.Boolean({
      description: 'decommission only, for a node that is offline for good: its slivers are forgotten without its confirmation and it is decommissioned at once',
    })),
  },
  Strict,
);
export type NodeAction = Static<typeof NodeAction>;
export const NodeListQuery = Type.Object(
  {
    site: Type.Optional(Type.String({ pattern: LOGIN_BASE_PATTERN })),
    all: Type.Optional(Type.Boolean({ description: 'also decommissioned nodes (default false)' })),
  },
  { additionalProperties: false },
);
export type NodeListQuery = Static<typeof NodeListQuery>;
/** A new node key from rotation: the old key works until this one is first used, and a short grace after. */
export const NodeKey = Type.Object({ node_id: Uuid, node_key: Type.String() });
export type NodeKey = Static<typeof NodeKey>;
/** An unused enrollment token of a site (the secret itself is never shown again). */
export const EnrollmentTokenInfo = Type.Object({
  id: Uuid,
  site: Type.String(),
  created_by: Nullable(Uuid),
  created_at: Timestamp,
  expires_at: Timestamp,
});
export type EnrollmentTokenInfo = Static<typeof EnrollmentTokenInfo>;
export const TokensRevoked = Type.Object({ revoked: Type.Integer({ description: 'how many tokens were ended' }) });
export type TokensRevoked = Static<typeof TokensRevoked>;
export const EnrollmentTokenCreate = Type.Object(
  { ttl_seconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 30 * 86400, description: 'default 86400' })) },
  Strict,
);
export type EnrollmentTokenCreate = Static<typeof EnrollmentTokenCreate>;
export const EnrollmentToken = Type.Object({
  token: Type.String(),
  site: Type.String(),
  expires_at: Timestamp,
  id: Type.Optional(Uuid),
  /** The registry's URL as nodes reach it, and the pin of its CA (null when it serves plain HTTP). */
  registry: Type.Optional(Type.String()),
  ca_pin: Type.Optional(Type.Union([Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }), Type.Null()])),
});
export type EnrollmentToken = Static<typeof EnrollmentToken>;
export const EnrollRequest = Type.Object(
  {
    token: Type.String({ minLength: 1, maxLength: 200 }),
    hostname: Type.String({ pattern: '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$', maxLength: 253 }),
    address: Type.Union([Type.String({ format: 'ipv4' }), Type.String({ format: 'ipv6' })]),
    capabilities: NodeCapabilities,
    resources: NodeResources,
    port_window: Type.Optional(PortRange),
  },
  Strict,
);
export type EnrollRequest = Static<typeof EnrollRequest>;
export const EnrollResponse = Type.Object({ node_id: Uuid, node_key: Type.String() });
export type EnrollResponse = Static<typeof EnrollResponse>;

// ---- images ----------------------------------------------------------------------------------
export const IMAGE_VERSION_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$';
export const Image = Type.Object(
  {
    name: Type.String(),
    version: Nullable(Type.String({ description: 'free-form label; a new version is uploaded under a new name' })),
    arch: Type.String({ description: 'machine architecture of the root filesystem, e.g. x86_64' }),
    sha256: Type.String({ description: 'hex sha256 of the archive' }),
    size: Type.Integer({ description: 'bytes of the archive' }),
    kinds: Type.Array(Enum(SLICE_KINDS)),
    infohash: Nullable(Type.String({ description: 'BitTorrent v1 infohash (hex) of the private torrent of the archive' })),
    magnet: Nullable(Type.String({ description: 'magnet link with the registry\'s tracker (tr) and web seed (ws)' })),
    web_seed: Nullable(Type.String({ description: 'URL of the archive over HTTP (GET /v1/images/{name}/archive); null when the registry holds no archive' })),
    created_at: Timestamp,
  },
  { title: 'Image' },
);
export type Image = Static<typeof Image>;
/** POST /v1/images: the archive is the body (application/octet-stream); its manifest is the query. */
export const ImageUploadQuery = Type.Object(
  {
    name: Type.String({ pattern: IMAGE_NAME_PATTERN, description: 'unique and immutable: a new version is a new name, e.g. debian12-2026.11' }),
    kinds: Type.Optional(Type.String({ pattern: '^(lxc|kvm)(,(lxc|kvm))*$', description: 'comma-separated sliver kinds the image serves (default lxc)' })),
    version: Type.Optional(Type.String({ pattern: IMAGE_VERSION_PATTERN })),
    arch: Type.Optional(Type.String({ pattern: IMAGE_ARCH_PATTERN, description: 'default x86_64' })),
  },
  Strict,
);
export type ImageUploadQuery = Static<typeof ImageUploadQuery>;

// ---- slices ----------------------------------------------------------------------------------
export const SliceResources = Type.Object(
  {
    memory_mb: Type.Integer({ minimum: 16, maximum: 1 << 20 }),
    cpu_shares: Type.Integer({ minimum: 2, maximum: 262144 }),
    disk_mb: Type.Integer({ minimum: 16, maximum: 1 << 24 }),
    net_kbps: Type.Integer({ minimum: 8, maximum: 100_000_000 }),
    cpu_cap_percent: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 12_800, description: 'hard cpu cap per sliver, percent of one cpu (150 = one and a half); null or absent: no cap, only cpu_shares' }))),
  },
  Strict,
);
export type SliceResources = Static<typeof SliceResources>;
export const SliceMember = Type.Object({ id: Uuid, email: Type.String(), name: Type.String() });
export type SliceMember = Static<typeof SliceMember>;
export const Slice = Type.Object(
  {
    name: Type.String(),
    site: Type.String(),
    state: Enum(['active', 'deleting'] as const),
    description: Type.String(),
    url: Type.String(),
    kind: Enum(SLICE_KINDS),
    image: Type.String(),
    expires_at: Timestamp,
    members: Type.Array(SliceMember),
    resources: SliceResources,
    memory_reset: Enum(MEMORY_RESETS, "when the node's memory watchdog resets this slice's sliver: restart it as it was, or restore it from a fresh copy of its image"),
    created_at: Timestamp,
  },
  { title: 'Slice' },
);
export type Slice = Static<typeof Slice>;
export const SliceCreate = Type.Object(
  {
    name: Type.String({ pattern: SLICE_NAME_PATTERN, description: '<login_base>_<suffix>' }),
    description: Type.String({ maxLength: 4000 }),
    url: Type.String({ maxLength: 2000 }),
    kind: Type.Optional(Enum(SLICE_KINDS)),
    image: Type.Optional(Type.String({ pattern: IMAGE_NAME_PATTERN })),
    resources: Type.Optional(Type.Partial(SliceResources, Strict)),
    memory_reset: Type.Optional(Enum(MEMORY_RESETS, 'default restart')),
  },
  Strict,
);
export type SliceCreate = Static<typeof SliceCreate>;
export const SlicePatch = Type.Object(
  {
    description: Type.Optional(Type.String({ maxLength: 4000 })),
    url: Type.Optional(Type.String({ maxLength: 2000 })),
    resources: Type.Optional(Type.Partial(SliceResources, { ...Strict, minProperties: 1, description: 'pi or admin; running slivers take the new limits without a restart' })),
    memory_reset: Type.Optional(Enum(MEMORY_RESETS)),
  },
  { ...Strict, minProperties: 1 },
);
export type SlicePatch = Static<typeof SlicePatch>;
export const SliceRenew = Type.Object({ expires_at: Timestamp }, Strict);
export type SliceRenew = Static<typeof SliceRenew>;
export const MemberAdd = Type.Object({ user_id: Uuid }, Strict);
export type MemberAdd = Static<typeof MemberAdd>;

// ---- slivers ---------------------------------------------------------------------------------
export const SliverState = Enum(SLIVER_STATES);
export type SliverState = Static<typeof SliverState>;
export const WatchdogHold = Type.Object(
  {
    frozen_at: Timestamp,
    reason: Type.String({ maxLength: 1000 }),
    node_psi_some_avg10: Type.Number({ minimum: 0, maximum: 100, description: "the node's memory pressure when it was frozen, percent" }),
    sliver_psi_some_avg10: Type.Number({ minimum: 0, maximum: 100, description: "the sliver's own memory pressure when it was frozen, percent" }),
    thaw_psi_some: Type.Number({ minimum: 0, maximum: 100, description: "thawed once the node's memory pressure is below this" }),
    freeze_timeout_seconds: Type.Number({ minimum: 0, description: 'reset when still frozen after this long' }),
  },
  { title: 'WatchdogHold', description: 'the memory watchdog froze the sliver because of memory pressure (not its users: a thaw action lets it run again)', additionalProperties: false },
);
export type WatchdogHold = Static<typeof WatchdogHold>;
export const SliverUsage = Type.Object({
  cpu_seconds: Type.Optional(Type.Number({ description: 'cpu time used since the container started' })),
  memory_bytes: Type.Optional(Type.Integer({ description: 'memory in use now' })),
  disk_bytes: Type.Optional(Type.Integer({ description: 'disk in use now' })),
  net_rx_bytes: Type.Optional(Type.Integer({ description: 'bytes the sliver received since it started' })),
  net_tx_bytes: Type.Optional(Type.Integer({ description: 'bytes the sliver sent since it started' })),
  at: Type.Optional(Type.String({ format: 'date-time', description: 'when the node reported these figures (RFC 3339, UTC)' })),
});
export type SliverUsage = Static<typeof SliverUsage>;
export const Sliver = Type.Object(
  {
    id: Uuid,
    slice: Type.String(),
    node_id: Uuid,
    kind: Enum(SLICE_KINDS),
    state: SliverState,
    desired: Enum(['running', 'stopped', 'frozen', 'deleted'] as const, 'what the last action asked for'),
    address: Nullable(Type.String()),
    ports: PortRange,
    ssh: Type.Object({ host: Type.String(), port: Type.Integer(), user: Type.String() }),
    error: Nullable(Type.String()),
    usage: Nullable(SliverUsage),
    watchdog_hold: Nullable(WatchdogHold),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Sliver' },
);
export type Sliver = Static<typeof Sliver>;
export const SliverCreate = Type.Object({ node_id: Uuid }, Strict);
export type SliverCreate = Static<typeof SliverCreate>;
export const SliverAction = Type.Object({ action: Enum(SLIVER_ACTIONS) }, Strict);
export type SliverAction = Static<typeof SliverAction>;

// One accounting sample a sampling interval; a figure the node did not report is null.
export const UsageSample = Type.Object(
  {
    at: Timestamp,
    cpu_seconds: Nullable(Type.Number({ description: 'cumulative since the container started; lower than the sample before means it restarted' })),
    memory_bytes: Nullable(Type.Integer()),
    disk_bytes: Nullable(Type.Integer()),
    net_rx_bytes: Nullable(Type.Integer({ description: 'cumulative bytes received since the container started' })),
    net_tx_bytes: Nullable(Type.Integer({ description: 'cumulative bytes sent since the container started' })),
  },
  { title: 'UsageSample' },
);
export type UsageSample = Static<typeof UsageSample>;
export const UsageQuery = Type.Object(
  {
    since: Type.Optional(Type.String({ format: 'date-time', description: 'RFC 3339; default 24 hours ago' })),
    until: Type.Optional(Type.String({ format: 'date-time', description: 'RFC 3339; default now' })),
  },
  Strict,
);
export type UsageQuery = Static<typeof UsageQuery>;
export const UsageHistory = Type.Object(
  {
    sliver: Uuid,
    interval_seconds: Type.Integer({ description: 'the registry keeps about one sample per this many seconds' }),
    since: Timestamp,
    until: Timestamp,
    samples: Type.Array(UsageSample, { description: 'oldest first, since <= at <= until' }),
    truncated: Type.Boolean({ description: 'more samples fall in the window than one answer holds; ask again with since after the last sample\'s at' }),
  },
  { title: 'UsageHistory' },
);
export type UsageHistory = Static<typeof UsageHistory>;

// ---- events ----------------------------------------------------------------------------------
export const Event = Type.Object(
  {
    id: Type.Integer(),
    at: Timestamp,
    type: Type.String(),
    slice: Nullable(Type.String()),
    node: Nullable(Uuid),
    sliver: Nullable(Uuid),
    data: Type.Record(Type.String(), Type.Unknown()),
  },
  { title: 'Event' },
);
export type Event = Static<typeof Event>;
export const EventQuery = Type.Object(
  {
    slice: Type.Optional(Type.String({ maxLength: 60 })),
    node: Type.Optional(Uuid),
    type: Type.Optional(Type.String({ maxLength: 60 })),
    after: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'only events with a larger id' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    newest: Type.Optional(Type.Boolean({ description: 'the newest `limit` matching events rather than the oldest (still listed oldest first)' })),
  },
  Strict,
);
export type EventQuery = Static<typeof EventQuery>;
export const EventList = Type.Object({ events: Type.Array(Event) });
export type EventList = Static<typeof EventList>;
export const NodeEventCreate = Type.Object(
  {
    type: Type.String({ pattern: '^[a-z][a-z_]*\\.[a-z][a-z_.]*$', maxLength: 60 }),
    sliver: Type.Optional(Uuid),
    data: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  Strict,
);
export type NodeEventCreate = Static<typeof NodeEventCreate>;

// ---- node side -------------------------------------------------------------------------------
export const DesiredSliver = Type.Object({
  id: Uuid,
  slice: Type.String(),
  kind: Enum(SLICE_KINDS),
  desired: Enum(['running', 'stopped', 'frozen', 'deleted'] as const),
  restart_seq: Type.Integer({ description: 'bumped by each restart action' }),
  reset_seq: Type.Integer({ description: 'bumped by each reset action: rebuild the root filesystem from the image' }),
  thaw_seq: Type.Optional(Type.Integer({ description: "bumped by each thaw action: also lets go of a sliver the memory watchdog froze" })),
  image: Type.Object({
    name: Type.String(),
    sha256: Nullable(Type.String()),
    magnet: Nullable(Type.String()),
    web_seed: Nullable(Type.String()),
  }),
  resources: SliceResources,
  memory_reset: Enum(MEMORY_RESETS),
  ports: PortRange,
  expires_at: Timestamp,
  keys: Type.Array(Type.String(), { description: 'every slice member\'s OpenSSH public keys' }),
});
export type DesiredSliver = Static<typeof DesiredSliver>;
export const DesiredState = Type.Object(
  { node_id: Uuid, address: Type.String(), port_window: PortRange, slivers: Type.Array(DesiredSliver) },
  { title: 'DesiredState' },
);
export type DesiredState = Static<typeof DesiredState>;
export const DesiredStateQuery = Type.Object(
  { wait: Type.Optional(Type.Integer({ minimum: 0, maximum: 300, description: 'with If-None-Match: long-poll up to this many seconds' })) },
  Strict,
);
export const ObservedSliver = Type.Object(
  {
    id: Uuid,
    state: Enum([...SLIVER_STATES, 'deleted'] as const),
    // Agents send what their tools said; a longer message is cut to SLIVER_ERROR_MAX_CHARS, not refused.
    error: Type.Optional(Nullable(Type.String({ maxLength: 65536, description: 'kept to its first 4000 characters' }))),
    address: Type.Optional(Nullable(Type.String({ maxLength: 64 }))),
    cpu_seconds: Type.Optional(Type.Number({ minimum: 0, maximum: 1e15 })),
    // Byte figures land in bigint columns and JS numbers: cap them where both stay exact.
    memory_bytes: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    disk_bytes: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    net_rx_bytes: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    net_tx_bytes: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
    watchdog_hold: Type.Optional(Nullable(WatchdogHold)),
  },
  Strict,
);
export type ObservedSliver = Static<typeof ObservedSliver>;
/** A spare sliver a node keeps ready: built from the image with this sha256, running, in no slice yet. */
export const NodeSpare = Type.Object(
  {
    id: Uuid,
    image: Type.String({ pattern: IMAGE_NAME_PATTERN, description: 'the name of the image it was built from, as the node knows it' }),
    image_sha256: Type.String({ pattern: SHA256_HEX_PATTERN, description: 'sha256 of the image archive it was built from: matched against the published image; an image the registry has not published is matched by name' }),
    kind: Enum(SLICE_KINDS),
  },
  Strict,
);
export type NodeSpare = Static<typeof NodeSpare>;
/** A sliver's error as the registry keeps it: the first this many characters of what the agent reported. */
export const SLIVER_ERROR_MAX_CHARS = 4000;
export const ObservedState = Type.Object(
  {
    slivers: Type.Array(ObservedSliver, { maxItems: 100000 }),
    partial: Type.Optional(Type.Boolean({ description: 'slivers lists only those whose report changed since the last one: the others stay as the registry has them, and a deleting sliver left out is not gone (whole reports follow on the clock)' })),
    images: Type.Optional(
      Type.Array(
        Type.Object(
          {
            image: Type.String({ maxLength: 200 }),
            state: Type.String({ maxLength: 40 }),
            progress: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
            bytes_from_peers: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
            bytes_from_webseed: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
            bytes_from_registry: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
          },
          Strict,
        ),
        { maxItems: 1000 },
      ),
    ),
    // The agent may learn these only after it started (its qemu probe runs in the background), so
    // a report can correct what enrollment said; placement goes by the latest.
    capabilities: Type.Optional(Type.Object(NodeCapabilities.properties, { ...Strict, description: 'what the node can run now; replaces the capabilities given at enrollment when it differs' })),
    front_door: Type.Optional(
      // The front door listening now (null: none); the registry computes the fingerprint itself.
      Nullable(Type.Object({ port: FrontDoor.properties.port, host_key: FrontDoor.properties.host_key }, Strict)),
    ),
    // Absent: the node keeps no pool (stored as none), so every report states the whole pool.
    spares: Type.Optional(Type.Array(NodeSpare, {
      maxItems: 1000,
      description: 'spare slivers this node keeps ready (its warm pool): a new sliver of a slice whose image and kind match one is given its id; absent: none',
    })),
  },
  Strict,
);
export type ObservedState = Static<typeof ObservedState>;

/** A sliver's console log (a VM's serial console) is uploaded as its tail: at most this many bytes of UTF-8. */
export const SliverConsole = Type.Object(
  {
    sliver_id: Uuid,
    text: Type.String({ description: `the tail of the console as the node last uploaded it, at most ${SLIVER_CONSOLE_MAX_BYTES} bytes of UTF-8` }),
    updated_at: Timestamp,
  },
  { title: 'SliverConsole' },
);
export type SliverConsole = Static<typeof SliverConsole>;
/** The answer to a node's console upload. */
export const SliverConsoleReceipt = Type.Object({
  sliver_id: Uuid,
  bytes: Type.Integer({ description: 'bytes of UTF-8 stored' }),
  updated_at: Timestamp,
});
export type SliverConsoleReceipt = Static<typeof SliverConsoleReceipt>;

// ---- misc ------------------------------------------------------------------------------------
export const Health = Type.Object({ status: Type.Literal('ok'), database: Type.String(), fanout: Type.String(), version: Type.String() });
export type Health = Static<typeof Health>;
