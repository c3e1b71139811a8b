// End to end on one node: an admin publishes an image through the API; a slice asks for it; the
// node's agent has never seen it, fetches it from the registry's seeder (BitTorrent, with the web
// seed behind it), checks its sha256, imports it and runs the sliver from it. Set up like
// sliver.test.ts, with its own namespace names, addresses (198.18.0-9.0/24) and sliver subnets
// (10.70-79.0.0/24), so the e2e files can run side by side.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createReadStream, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Event, PlanetLiteClient, Sliver } from '@planetlite/api';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

let node: OneNode;
let admin: PlanetLiteClient;

beforeAll(async () => {
  node = await startOneNode({ site: 'img', octets: [0, 10], sliverSubnet: (o) => `10.${70 + (o % 10)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
  ({ admin } = node);
}, 240_000);

afterAll(async () => {
  await node?.close();
}, 120_000);

describe('an image published through the registry', () => {
  it('reaches a node that never had it, over BitTorrent, and a sliver runs from it', async () => {
    // The same archive the node imported as 'tiny', published under a new name: the node has no
    // image of that name, so it must fetch it.
    const file = join(node.dir, 'tiny.tar');
    const size = statSync(file).size;
    const image = await admin.uploadImage({ name: 'tinybt', kinds: 'lxc', version: '1' }, createReadStream(file), { size });
    expect(image).toMatchObject({ name: 'tinybt', size, kinds: ['lxc'] });
    expect(image.magnet).toMatch(/^magnet:\?xt=urn:btih:[0-9a-f]{40}/);

    await admin.createSlice({ name: 'img_fetched', description: 'image over bittorrent', url: 'https://example.org', image: 'tinybt' });
    const created = await admin.createSliver('img_fetched', node.nodeId);
    const sliver = await until('the sliver to run from the fetched image', async () => {
      const s: Sliver = await admin.getSliver(created.id);
      if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
      return s.state === 'running' ? s : null;
    }, 120_000);
    const out = await until('ssh into it', async () => node.ssh(sliver.ports.first, 'img_fetched', 'cat /etc/slicename'), 30_000);
    expect(out).toBe('img_fetched');

    // The node says where the bytes came from, and the fetch is an event.
    const seen = await until('the node to report the image', async () => {
      const n = await admin.getNode(node.nodeId);
      return n.images.find((i) => i.image === 'tinybt' && i.state === 'ready') ?? null;
    }, 30_000);
    console.log(`tinybt (${size} bytes): ${seen.bytes_from_peers} from other nodes, ${seen.bytes_from_registry} from the registry's seeder, ${seen.bytes_from_webseed} from the web seed`);
    // The only node: nothing can come from another node.
    expect(seen.bytes_from_peers).toBe(0);
    expect((seen.bytes_from_registry ?? 0) + seen.bytes_from_webseed).toBeGreaterThanOrEqual(size);
    const fetched = await until('the image.fetched event', async () => {
      const evs = (await admin.listEvents({ type: 'image.fetched' })) as Event[];
      return evs.find((e) => (e.data as { image?: string }).image === 'tinybt') ?? null;
    }, 30_000);
    expect(fetched.data).toMatchObject({ sha256: image.sha256 });
  }, 240_000);
});
