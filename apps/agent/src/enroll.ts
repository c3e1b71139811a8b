// planetlite-agent enroll: trade a site's one-time token for this node's key, kept in the state dir.
// Over HTTPS the registry is pinned first (kubeadm-style): its CA must match the pin that came with
// the token, and from then on this node trusts only that CA for its registry.
import { fetchPinnedCa, normalizePin, tlsVerifyCodeOf, trustRegistry, causeOf, type NodeCapabilities, type PortRange } from '@planetlite/api';
import { existsSync, rmSync } from 'node:fs';
import { StateDir, type Enrollment } from './state.js';
import { machine } from 'node:os';
import { defaultHostname, probeResources } from './probe.js';
import { registryClient } from './registry-client.js';

export interface EnrollOptions {
  registry: string;
  token: string;
  address: string;
  stateDir: string;
  /** sha256:… of the registry's CA, as `planetlite site token` prints it; absent: the system's CAs. */
  caPin?: string | undefined;
  hostname?: string;
  portWindow?: PortRange;
  /** Default: none yet — the first report of `run` carries what its drivers' checks found. */
  capabilities?: NodeCapabilities;
}

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]|localhost)$/;

/** Plain HTTP carries the node key in clear: only to a registry on this machine (behind its proxy). */
export function checkRegistryUrl(registry: string): URL {
  if (!URL.canParse(registry)) throw new Error(`--registry must be a URL such as https://registry.example.org:8080, got '${registry}'`);
  const url = new URL(registry);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error(`--registry must be an https:// URL, got '${registry}'`);
  if (url.protocol === 'http:' && !LOOPBACK.test(url.hostname)) {
    throw new Error(`refusing plain http:// to ${url.host}: the node key would travel in clear; use the registry's https:// URL (planetlite site token prints it)`);
  }
  return url;
}

export async function enroll(opts: EnrollOptions): Promise<Enrollment> {
  const url = checkRegistryUrl(opts.registry);
  // Check the pin before anything is written or the token is sent.
  let ca: string | null = null;
  if (opts.caPin !== undefined) {
    const pin = normalizePin(opts.caPin);
    if (url.protocol !== 'https:') throw new Error('--ca-pin needs an https:// registry URL');
    ca = await fetchPinnedCa(opts.registry, pin);
    trustRegistry(opts.registry, ca);
  }
  const state = new StateDir(opts.stateDir);
  const existed = existsSync(state.dir);
  state.ensure();
  const client = registryClient(opts.registry);
  const hostname = opts.hostname ?? defaultHostname();
  let res;
  try {
    res = await client.enroll({
      token: opts.token,
      hostname,
      address: opts.address,
      capabilities: opts.capabilities ?? { lxc: false, kvm: false, kvm_accel: null, arch: machine() },
      resources: probeResources(opts.stateDir),
      ...(opts.portWindow ? { port_window: opts.portWindow } : {}),
    });
  } catch (err) {
    if (!existed) rmSync(state.dir, { recursive: true, force: true });
    const code = tlsVerifyCodeOf(err);
    if (code && ca) throw new Error(`the registry at ${url.host} presents a certificate its pinned CA did not sign (${code}): another server is answering at that address; nothing was written`, { cause: err });
    if (code) throw new Error(`the registry's certificate at ${url.host} is not trusted by this machine (${code}): pass --ca-pin sha256:… as \`planetlite site token\` prints it`, { cause: err });
    if (err instanceof TypeError) throw new Error(`cannot reach the registry at ${url.origin}: ${causeOf(err)}`, { cause: err });
    throw err;
  }
  const node = await registryClient(opts.registry, res.node_key).getNode(res.node_id);
  const enrollment: Enrollment = {
    registry: client.registry,
    node_id: res.node_id,
    node_key: res.node_key,
    address: opts.address,
    hostname,
    site: node.site,
    enrolled_at: new Date().toISOString(),
    ca_pin: ca ? normalizePin(opts.caPin as string) : null,
  };
  state.writeCa(ca);
  state.writeEnrollment(enrollment);
  state.clearRevoked();
  return enrollment;
}
