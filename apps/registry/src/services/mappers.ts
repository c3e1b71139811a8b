// Database rows → API objects. Both drivers hand back Date or string for timestamps.
import type * as S from '@planetlite/api';

export type Row = Record<string, unknown>;

export const iso = (v: unknown): string => new Date(v as string).toISOString();
const isoOrNull = (v: unknown): string | null => (v == null ? null : iso(v));
/** jsonb columns: parsed objects from pg and PGlite, text if a driver ever hands back text. */
export const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));

export function toSite(r: Row): S.Site {
  return {
    login_base: r.login_base as string,
    name: r.name as string,
    max_slices: r.max_slices as number,
    max_slivers: r.max_slivers as number,
    enabled: r.enabled as boolean,
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

export function toUser(r: Row): S.User {
  return {
    id: r.id as string,
    email: r.email as string,
    name: r.name as string,
    site: (r.site as string | null) ?? null,
    roles: r.roles as S.Role[],
    created_at: iso(r.created_at),
  };
}

export function toKey(r: Row): S.SshKey {
  return {
    id: r.id as string,
    user_id: r.user_id as string,
    type: r.type as string,
    fingerprint: r.fingerprint as string,
    comment: r.comment as string,
    key: r.key as string,
    created_at: iso(r.created_at),
  };
}

export function toNode(r: Row): S.Node {
  return {
    id: r.id as string,
    hostname: r.hostname as string,
    site: r.site as string,
    address: r.address as string,
    state: r.state as S.Node['state'],
    capabilities: json(r.capabilities),
    resources: json(r.resources),
    port_window: { first: r.port_first as number, last: r.port_last as number },
    last_seen: isoOrNull(r.last_seen),
    images: json(r.images),
    created_at: iso(r.created_at),
  };
}

/** The columns toImage reads: never the torrent's info dictionary, which can be large. */
export const IMAGE_COLUMNS = 'name, version, arch, sha256, size, kinds, infohash, magnet, file, created_at';

/** publicUrl: the registry's, for the web seed link (absent when this registry holds no archive). */
export function toImage(r: Row, publicUrl: string): S.Image {
  const name = r.name as string;
  return {
    name,
    version: (r.version as string | null) ?? null,
    arch: (r.arch as string | null) ?? 'x86_64',
    sha256: r.sha256 as string,
    size: Number(r.size),
    kinds: r.kinds as S.Image['kinds'],
    infohash: (r.infohash as string | null) ?? null,
    magnet: (r.magnet as string | null) ?? null,
    web_seed: r.file ? `${publicUrl}/v1/images/${encodeURIComponent(name)}/archive` : null,
    created_at: iso(r.created_at),
  };
}

export function toSlice(r: Row, members: S.SliceMember[]): S.Slice {
  return {
    name: r.name as string,
    site: r.site as string,
    state: r.state as S.Slice['state'],
    description: r.description as string,
    url: r.url as string,
    kind: r.kind as S.Slice['kind'],
    image: r.image as string,
    expires_at: iso(r.expires_at),
    members,
    resources: json(r.resources),
    memory_reset: (r.memory_reset as S.Slice['memory_reset'] | undefined) ?? 'restart',
    created_at: iso(r.created_at),
  };
}

/** r must carry the node's address as node_address (see SLIVER_SELECT). */
export function toSliver(r: Row): S.Sliver {
  const first = r.port_first as number;
  return {
    id: r.id as string,
    slice: r.slice as string,
    node_id: r.node_id as string,
    kind: r.kind as S.Sliver['kind'],
    state: r.state as S.Sliver['state'],
    desired: r.desired as S.Sliver['desired'],
    address: (r.address as string | null) ?? null,
    ports: { first, last: r.port_last as number },
    ssh: { host: r.node_address as string, port: first, user: r.slice as string },
    error: (r.error as string | null) ?? null,
    usage: r.usage == null ? null : toUsage(json<S.SliverUsage>(r.usage)),
    created_at: iso(r.created_at),
    updated_at: iso(r.updated_at),
  };
}

// The database writes now() into the jsonb in its own format; the API speaks toISOString's.
function toUsage(u: S.SliverUsage): S.SliverUsage {
  return u.at === undefined ? u : { ...u, at: iso(u.at) };
}

const numberOrNull = (v: unknown): number | null => (v == null ? null : Number(v));

export function toUsageSample(r: Row): S.UsageSample {
  return {
    at: iso(r.at),
    cpu_seconds: numberOrNull(r.cpu_seconds),
    memory_bytes: numberOrNull(r.memory_bytes),
    disk_bytes: numberOrNull(r.disk_bytes),
    net_rx_bytes: numberOrNull(r.net_rx_bytes),
    net_tx_bytes: numberOrNull(r.net_tx_bytes),
  };
}

export const SLIVER_SELECT = 'SELECT s.*, n.address AS node_address FROM slivers s JOIN nodes n ON n.id = s.node_id';

export function toEvent(r: Row): S.Event {
  return {
    id: Number(r.id),
    at: iso(r.at),
    type: r.type as string,
    slice: (r.slice as string | null) ?? null,
    node: (r.node as string | null) ?? null,
    sliver: (r.sliver as string | null) ?? null,
    data: json(r.data),
  };
}
