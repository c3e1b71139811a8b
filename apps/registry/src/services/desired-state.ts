// The desired state of a node: the document its agent long-polls, and the ETag that names it.
import { createHash } from 'node:crypto';
import { AppError } from '@planetlite/core';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import type { Queryable } from '@planetlite/db';
import { findNode } from '../repositories/nodes.js';
import { desiredSliversOf, memberKeysOfSlices } from '../repositories/slivers.js';
import { webSeedOf } from '../repositories/images.js';

export interface DesiredStateDeps {
  db: Queryable;
  /** Read on every call: a registry listening on port 0 learns its public URL after start. */
  config: { publicUrl: string };
}

export async function desiredStateOf(deps: DesiredStateDeps, nodeId: string): Promise<DesiredState> {
  const { db, config } = deps;
  const node = await findNode(db, nodeId);
  if (!node) throw new AppError('not_found', `node ${nodeId} not found`);
  const rows = await desiredSliversOf(db, nodeId);
  const keys = await memberKeysOfSlices(db, [...new Set(rows.map((r) => r.slice))]);
  const slivers: DesiredSliver[] = rows.map((r) => ({
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
    keys: keys.filter((k) => k.slice === r.slice).map((k) => k.key),
  }));
  return { node_id: nodeId, address: node.address, port_window: node.port_window, slivers };
}

export const etagOf = (doc: DesiredState): string => `"${createHash('sha256').update(JSON.stringify(doc)).digest('base64url').slice(0, 27)}"`;
