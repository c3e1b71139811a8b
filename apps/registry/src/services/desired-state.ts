// The desired state of a node: the document its agent long-polls, and the ETag that names it.
import { createHash } from 'node:crypto';
import { AppError } from '@planetlite/core';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import { desiredStateRows } from '../repositories/slivers.js';
import { webSeedOf } from '../repositories/images.js';

export interface DesiredStateDeps {
  db: Queryable;
  /** Read on every call: a registry listening on port 0 learns its public URL after start. */
  config: { publicUrl: string };
}

/** The document and whether the node's key is revoked, from one statement. */
export async function readDesiredState(deps: DesiredStateDeps, nodeId: string): Promise<{ doc: DesiredState; revoked: boolean }> {
  const { db, config } = deps;
  const rows = await desiredStateRows(db, nodeId);
  if (!rows) throw new AppError('not_found', `node ${nodeId} not found`);
  const slivers: DesiredSliver[] = rows.slivers.map((r) => ({
    id: r.id,
    slice: r.slice,
    kind: r.kind,
    desired: r.desired,
    restart_seq: r.restart_seq,
    reset_seq: r.reset_seq,
    thaw_seq: r.thaw_seq,
    image: { name: r.image, sha256: r.sha256, magnet: r.magnet, web_seed: r.sha256 ? webSeedOf(config.publicUrl, r.image) : null },
    resources: r.resources,
    memory_reset: r.memory_reset,
    ports: r.ports,
    expires_at: r.expires_at,
    keys: r.keys,
  }));
  return { doc: { node_id: nodeId, address: rows.address, port_window: rows.port_window, slivers }, revoked: rows.revoked };
}

export async function desiredStateOf(deps: DesiredStateDeps, nodeId: string): Promise<DesiredState> {
  return (await readDesiredState(deps, nodeId)).doc;
}

export const etagOf = (doc: DesiredState): string => `"${createHash('sha256').update(JSON.stringify(doc)).digest('base64url').slice(0, 27)}"`;
