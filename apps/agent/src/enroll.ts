// planetlite-agent enroll: trade a site's one-time token for this node's key, kept in the state dir.
import { PlanetLiteClient, type NodeCapabilities, type PortRange } from '@planetlite/api';
import { StateDir, type Enrollment } from './state.js';
import { machine } from 'node:os';
import { defaultHostname, probeResources } from './probe.js';

export interface EnrollOptions {
  registry: string;
  token: string;
  address: string;
  stateDir: string;
  hostname?: string;
  portWindow?: PortRange;
  /** Default: none yet — the first report of `run` carries what its drivers' checks found. */
  capabilities?: NodeCapabilities;
}

export async function enroll(opts: EnrollOptions): Promise<Enrollment> {
  const state = new StateDir(opts.stateDir);
  state.ensure();
  const client = new PlanetLiteClient({ registry: opts.registry });
  const hostname = opts.hostname ?? defaultHostname();
  const res = await client.enroll({
    token: opts.token,
    hostname,
    address: opts.address,
    capabilities: opts.capabilities ?? { lxc: false, kvm: false, kvm_accel: null, arch: machine() },
    resources: probeResources(state.dir),
    ...(opts.portWindow ? { port_window: opts.portWindow } : {}),
  });
  const node = await new PlanetLiteClient({ registry: opts.registry, token: res.node_key }).getNode(res.node_id);
  const enrollment: Enrollment = {
    registry: client.registry,
    node_id: res.node_id,
    node_key: res.node_key,
    address: opts.address,
    hostname,
    site: node.site,
    enrolled_at: new Date().toISOString(),
  };
  state.writeEnrollment(enrollment);
  return enrollment;
}
