// Lets users name things the way they know them: "me" or an email for a user, a hostname for a node.
import type { PlanetLiteClient } from '@planetlite/api';
import { CliError } from './errors.js';
import { UUID } from './parse.js';

export async function resolveUserId(client: PlanetLiteClient, ref: string): Promise<string> {
  if (ref === 'me') return (await client.me()).id;
  if (ref.includes('@')) {
    const email = ref.toLowerCase();
    const user = (await client.listUsers()).find((u) => u.email.toLowerCase() === email);
    if (!user) throw new CliError(`no user with email ${ref} that you may see`);
    return user.id;
  }
  return ref;
}

export async function resolveNodeId(client: PlanetLiteClient, ref: string): Promise<string> {
  if (UUID.test(ref)) return ref;
  // Decommissioned nodes too: their history (events, node show) is still asked for by hostname.
  const nodes = await client.listNodes({ all: true });
  const node = nodes.find((n) => n.hostname === ref) ?? nodes.find((n) => n.hostname.split('.')[0] === ref);
  if (!node) throw new CliError(`no node with id or hostname ${ref}`);
  return node.id;
}
