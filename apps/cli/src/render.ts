// Human renderings of API objects: tables for lists, records for one object.
import type { Event, Image, Node, Site, Slice, Sliver, SshKey, UsageHistory, User } from '@planetlite/api';
import { rate, usageRows } from './stats.js';
import { bytes, formatRecord, formatTable, when } from './table.js';

export function sshCommand(s: Pick<Sliver, 'ssh'>): string {
  return `ssh -p ${s.ssh.port} ${s.ssh.user}@${s.ssh.host}`;
}

export function siteTable(sites: readonly Site[]): string {
  return formatTable(
    ['LOGIN_BASE', 'NAME', 'MAX_SLICES', 'MAX_SLIVERS', 'ENABLED'],
    sites.map((s) => [s.login_base, s.name, s.max_slices, s.max_slivers, s.enabled]),
  );
}

export function siteRecord(s: Site): string {
  return formatRecord([
    ['login_base', s.login_base],
    ['name', s.name],
    ['max_slices', s.max_slices],
    ['max_slivers', s.max_slivers],
    ['enabled', s.enabled],
    ['created_at', s.created_at],
    ['updated_at', s.updated_at],
  ]);
}

export function userTable(users: readonly User[]): string {
  return formatTable(
    ['ID', 'EMAIL', 'NAME', 'SITE', 'ROLES'],
    users.map((u) => [u.id, u.email, u.name, u.site, u.roles.join(',')]),
  );
}

export function userRecord(u: User, extra: readonly (readonly [string, string])[] = []): string {
  return formatRecord([
    ['id', u.id],
    ['email', u.email],
    ['name', u.name],
    ['site', u.site],
    ['roles', u.roles.join(', ')],
    ['created_at', u.created_at],
    ...extra,
  ]);
}

export function keyTable(keys: readonly SshKey[]): string {
  return formatTable(
    ['ID', 'TYPE', 'FINGERPRINT', 'COMMENT'],
    keys.map((k) => [k.id, k.type, k.fingerprint, k.comment]),
  );
}

export function keyRecord(k: SshKey): string {
  return formatRecord([
    ['id', k.id],
    ['user_id', k.user_id],
    ['type', k.type],
    ['fingerprint', k.fingerprint],
    ['comment', k.comment],
  ]);
}

export function sliceTable(slices: readonly Slice[]): string {
  return formatTable(
    ['NAME', 'SITE', 'KIND', 'IMAGE', 'MEMBERS', 'EXPIRES_AT'],
    slices.map((s) => [s.name, s.site, s.kind, s.image, s.members.length, s.expires_at]),
  );
}

export function sliceRecord(s: Slice): string {
  const r = s.resources;
  return formatRecord([
    ['name', s.name],
    ['site', s.site],
    ['state', s.state],
    ['description', s.description],
    ['url', s.url],
    ['kind', s.kind],
    ['image', s.image],
    ['expires_at', when(s.expires_at)],
    ['resources', `memory ${r.memory_mb} MB, cpu_shares ${r.cpu_shares}${r.cpu_cap_percent ? `, cpu cap ${r.cpu_cap_percent}%` : ''}, disk ${r.disk_mb} MB, net ${r.net_kbps} kbps`],
    ['memory reset', s.memory_reset === 'restore' ? 'restore from the image' : 'restart'],
    ['members', s.members.map((m) => `${m.email} (${m.name}) ${m.id}`)],
    ['created_at', s.created_at],
  ]);
}

export function sliverTable(slivers: readonly Sliver[]): string {
  return formatTable(
    ['ID', 'NODE_ID', 'KIND', 'STATE', 'ADDRESS', 'SSH'],
    slivers.map((s) => [s.id, s.node_id, s.kind, s.watchdog_hold ? 'frozen (watchdog)' : s.state, s.address, sshCommand(s)]),
  );
}

/** A freeze by the memory watchdog, in one line: since when, why, and what ends it. */
function holdText(s: Sliver): string | null {
  const h = s.watchdog_hold;
  if (!h) return null;
  return `the memory watchdog since ${h.frozen_at}: ${h.reason}; thawed when the node's memory pressure is below ${h.thaw_psi_some}%, reset after ${h.freeze_timeout_seconds} s (planetlite sliver thaw ${s.id} lets it run now)`;
}

export function sliverRecord(s: Sliver): string {
  const usage = s.usage;
  const usageText = usage
    ? [
        usage.cpu_seconds !== undefined ? `cpu ${usage.cpu_seconds.toFixed(1)} s` : null,
        usage.memory_bytes !== undefined ? `memory ${bytes(usage.memory_bytes)}` : null,
        usage.disk_bytes !== undefined ? `disk ${bytes(usage.disk_bytes)}` : null,
        usage.net_rx_bytes !== undefined ? `rx ${bytes(usage.net_rx_bytes)}` : null,
        usage.net_tx_bytes !== undefined ? `tx ${bytes(usage.net_tx_bytes)}` : null,
      ]
        .filter((x) => x !== null)
        .join(', ')
    : null;
  return formatRecord([
    ['id', s.id],
    ['slice', s.slice],
    ['node_id', s.node_id],
    ['kind', s.kind],
    ['state', s.state],
    ['desired', s.desired],
    ['address', s.address],
    ['ports', `${s.ports.first}-${s.ports.last}`],
    ['error', s.error],
    ['frozen_by', holdText(s)],
    ['usage', usageText],
    ['updated_at', s.updated_at],
    ['ssh', sshCommand(s)],
  ]);
}

const bytesOrNull = (n: number | null | undefined): string | null => (n == null ? null : bytes(n));
// Seconds are plenty for minute samples, and the column stays narrow.
const shortTime = (iso: string): string => iso.replace(/\.\d+Z$/, 'Z');

/** The latest figures a sliver's node reported, as `sliver stats` shows them above the history. */
export function usageRecord(s: Sliver): string {
  const u = s.usage;
  return formatRecord([
    ['sliver', s.id],
    ['slice', s.slice],
    ['state', s.state],
    ['reported_at', u ? when(u.at) ?? 'unknown' : 'nothing reported yet'],
    ['cpu', u?.cpu_seconds === undefined ? null : `${u.cpu_seconds.toFixed(1)} s since start`],
    ['memory', bytesOrNull(u?.memory_bytes)],
    ['disk', bytesOrNull(u?.disk_bytes)],
    ['net_rx', u?.net_rx_bytes === undefined ? null : `${bytes(u.net_rx_bytes)} since start`],
    ['net_tx', u?.net_tx_bytes === undefined ? null : `${bytes(u.net_tx_bytes)} since start`],
  ]);
}

/** The history, one row a sample: cpu % of one core and kbit/s over the interval ending at AT. */
export function usageTable(h: UsageHistory): string {
  return formatTable(
    ['AT', 'CPU_%', 'MEMORY', 'DISK', 'RX_KBIT/S', 'TX_KBIT/S'],
    usageRows(h.samples).map((r) => [shortTime(r.at), rate(r.cpuPercent), bytesOrNull(r.memoryBytes), bytesOrNull(r.diskBytes), rate(r.rxKbps), rate(r.txKbps)]),
  );
}

/** `planetlite sliver stats`: the latest usage, then the history since h.since. */
export function sliverStats(s: Sliver, h: UsageHistory): string {
  const history = h.samples.length
    ? usageTable(h)
    : `no usage samples since ${shortTime(h.since)} (the registry keeps one about every ${h.interval_seconds} s while the node reports)`;
  return `${usageRecord(s)}\n\n${history}`;
}

function kinds(n: Node): string {
  const k: string[] = [];
  if (n.capabilities.lxc) k.push('lxc');
  if (n.capabilities.kvm) k.push(n.capabilities.kvm_accel ? `kvm(${n.capabilities.kvm_accel})` : 'kvm');
  return k.join(',');
}

export function nodeTable(nodes: readonly Node[]): string {
  return formatTable(
    ['ID', 'HOSTNAME', 'SITE', 'ADDRESS', 'STATE', 'ADMIN', 'KINDS', 'LAST_SEEN'],
    nodes.map((n) => [n.id, n.hostname, n.site, n.address, n.state, n.admin_state, kinds(n), n.last_seen]),
  );
}

export function nodeRecord(n: Node): string {
  const record = formatRecord([
    ['id', n.id],
    ['hostname', n.hostname],
    ['site', n.site],
    ['address', n.address],
    ['state', n.state],
    ['admin_state', n.admin_state],
    ['key_revoked_at', n.key_revoked_at],
    ['kinds', kinds(n)],
    ['arch', n.capabilities.arch ?? null],
    ['resources', `${n.resources.cpus} cpus, memory ${n.resources.memory_mb} MB, disk ${n.resources.disk_mb} MB`],
    ['port_window', `${n.port_window.first}-${n.port_window.last}`],
    ['location', n.location ? `${n.location.city} (${n.location.latitude}, ${n.location.longitude})` : null],
    ['front_door', n.front_door ? `port ${n.front_door.port}, host key ${n.front_door.fingerprint}` : null],
    ['warm_pool', n.spares ? `${n.spares} spare sliver(s) ready` : null],
    ['last_seen', when(n.last_seen)],
    ['created_at', n.created_at],
  ]);
  if (n.images.length === 0) return record;
  const images = formatTable(
    ['IMAGE', 'STATE', 'PROGRESS', 'FROM_PEERS', 'FROM_REGISTRY', 'FROM_WEBSEED'],
    n.images.map((i) => [
      i.image,
      i.state,
      i.progress === undefined ? null : `${Math.round(i.progress * 100)}%`,
      bytes(i.bytes_from_peers),
      i.bytes_from_registry === undefined ? null : bytes(i.bytes_from_registry),
      bytes(i.bytes_from_webseed),
    ]),
  );
  return `${record}\n\n${images}`;
}

export function imageTable(images: readonly Image[]): string {
  return formatTable(
    ['NAME', 'VERSION', 'ARCH', 'KINDS', 'SIZE', 'SHA256', 'CREATED_AT'],
    images.map((i) => [i.name, i.version, i.arch, i.kinds.join(','), bytes(i.size), i.sha256.slice(0, 16), i.created_at]),
  );
}

export function imageRecord(i: Image): string {
  return formatRecord([
    ['name', i.name],
    ['version', i.version],
    ['arch', i.arch],
    ['kinds', i.kinds.join(',')],
    ['size', `${bytes(i.size)} (${i.size} bytes)`],
    ['sha256', i.sha256],
    ['infohash', i.infohash],
    ['magnet', i.magnet],
    ['web_seed', i.web_seed],
    ['created_at', i.created_at],
  ]);
}

export function eventTable(events: readonly Event[]): string {
  return formatTable(
    ['ID', 'AT', 'TYPE', 'SLICE', 'NODE', 'DATA'],
    events.map((e) => [e.id, e.at, e.type, e.slice, e.node, Object.keys(e.data).length ? JSON.stringify(e.data) : null]),
  );
}

/** One line per event for --follow, in the same order as the table columns. */
export function eventLine(e: Event): string {
  const parts = [String(e.id), e.at, e.type];
  if (e.slice) parts.push(`slice=${e.slice}`);
  if (e.node) parts.push(`node=${e.node}`);
  if (e.sliver) parts.push(`sliver=${e.sliver}`);
  if (Object.keys(e.data).length) parts.push(JSON.stringify(e.data));
  return parts.join('  ');
}
