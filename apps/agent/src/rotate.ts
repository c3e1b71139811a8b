// Node key rotation: a new key from the registry, written into the enrollment file atomically. The
// old key keeps working until the new one is first used (and a short grace after), and a running
// agent picks the new key up from the file (sync.ts), so the node never loses contact.
import { StateDir } from './state.js';
import { registryClient } from './registry-client.js';

export interface RotatedKey {
  node_id: string;
  registry: string;
}

export async function rotateKey(opts: { stateDir: string }): Promise<RotatedKey> {
  const state = new StateDir(opts.stateDir);
  const e = state.readEnrollment();
  state.trustPinnedRegistry(e);
  const old = registryClient(e.registry, e.node_key);
  const { node_key } = await old.rotateNodeKey(e.node_id);
  // Written before the new key is ever used: if this fails, the old key is still the node's.
  state.writeEnrollment({ ...e, node_key });
  // Its first use makes it the node's key; a running agent switches on its next poll or its first 401.
  await registryClient(e.registry, node_key).getNode(e.node_id);
  return { node_id: e.node_id, registry: e.registry };
}
