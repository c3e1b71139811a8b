// A node's life as its site admin sees it, end to end on one node over HTTPS: drained, it gets no
// new sliver while its running one keeps answering ssh; undrained, it gets them again;
// decommissioned, its slivers are torn down on the node, its key is revoked, and its record stays;
// a node whose key is revoked cuts its slivers' forwarding until it is enrolled again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ApiError, PlanetLiteClient, type Sliver } from '@planetlite/api';
import { enroll } from '@planetlite/agent';
import { sliverLeftovers } from '../harness/node.ts';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

let node: OneNode;
let admin: PlanetLiteClient;

beforeAll(async () => {
  node = await startOneNode({ site: 'lc', octets: [150, 50], sliverSubnet: (o) => `10.${130 + (o % 10)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
  admin = node.admin;
  await admin.createSlice({ name: 'lc_two', description: 'lifecycle e2e', url: 'https://example.org', image: 'tiny' });
}, 180_000);

afterAll(async () => {
  await node?.close();
}, 120_000);

async function running(id: string): Promise<Sliver> {
  return until(`sliver ${id} to run`, async () => {
    const s = await admin.getSliver(id);
    if (s.state === 'failed') throw new Error(`sliver failed: ${s.error}`);
    return s.state === 'running' ? s : null;
  }, 60_000);
}

describe('a node through drain, undrain and decommission', () => {
  let one: Sliver;
  const ids: string[] = [];

  it('drained: no new sliver (409 node_draining naming the node), the running one keeps answering ssh', async () => {
    one = await node.runningSliver('lc_one');
    ids.push(one.id);
    const drained = await admin.nodeAction(node.nodeId, 'drain');
    expect(drained.admin_state).toBe('draining');
    const refused = await admin.createSliver('lc_two', node.nodeId).then(() => null, (e: unknown) => e);
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).toMatchObject({ status: 409, code: 'node_draining' });
    expect((refused as ApiError).message).toContain(drained.hostname);
    expect(node.ssh(one.ports.first, 'lc_one', 'cat /etc/slicename')).toBe('lc_one');
    expect((await admin.getSliver(one.id)).state).toBe('running');
    // Researchers see it too.
    expect((await admin.listNodes()).find((n) => n.id === node.nodeId)?.admin_state).toBe('draining');
  }, 120_000);

  it('undrained: slivers are placed there again', async () => {
    expect((await admin.nodeAction(node.nodeId, 'undrain')).admin_state).toBe('active');
    const two = await running((await admin.createSliver('lc_two', node.nodeId)).id);
    ids.push(two.id);
    expect(node.ssh(two.ports.first, 'lc_two', 'cat /etc/slicename')).toBe('lc_two');
  }, 120_000);

  it('decommissioned: its slivers are torn down on the node, then its key is revoked; the record stays', async () => {
    const nodeKey = node.agent!.client.token!;
    const answer = await admin.nodeAction(node.nodeId, 'decommission');
    expect(answer.admin_state).toBe('decommissioning');
    const gone = await until('the node to be decommissioned', async () => {
      const n = await admin.getNode(node.nodeId);
      return n.admin_state === 'decommissioned' ? n : null;
    }, 60_000);
    expect(gone.key_revoked_at).toBeTruthy();
    expect(await admin.listSlivers('lc_one')).toEqual([]);
    expect(await admin.listSlivers('lc_two')).toEqual([]);
    expect(await sliverLeftovers({ stateDir: node.stateDir, ns: node.ns, ids })).toEqual([]);
    // The node's own key no longer opens anything.
    await expect(new PlanetLiteClient({ registry: node.registry.url, token: nodeKey }).desiredState(node.nodeId)).rejects.toMatchObject({ status: 401, code: 'node_key_revoked' });
    // It leaves the node list, and stays on record for the history.
    expect((await admin.listNodes()).some((n) => n.id === node.nodeId)).toBe(false);
    expect((await admin.listNodes({ all: true })).some((n) => n.id === node.nodeId)).toBe(true);
    const events = (await admin.listEvents({ node: node.nodeId })).map((e) => e.type);
    expect(events).toEqual(expect.arrayContaining(['node.drained', 'node.undrained', 'node.decommissioning', 'node.decommissioned']));
    // A new sliver there is refused.
    await expect(admin.createSliver('lc_one', node.nodeId)).rejects.toMatchObject({ status: 409, code: 'node_decommissioned' });
  }, 120_000);
});

describe('a node whose key is revoked', () => {
  let hostname: string;
  const reachable = (port: number, slice: string) => {
    try {
      return node.ssh(port, slice, 'cat /etc/slicename') === slice;
    } catch {
      return false;
    }
  };
  const containerState = (id: string) =>
    execFileSync('nsenter', [`--net=/run/netns/${node.ns}`, 'lxc-info', '-P', join(node.stateDir, 'lxc'), '-n', `sl-${id}`, '-sH'], { encoding: 'utf8' }).trim();
  const enrollAgain = async () => {
    await node.stopAgent();
    const token = (await admin.createEnrollmentToken('lc')).token;
    const e = await enroll({ registry: node.registry.url, token, caPin: node.registry.caPin!, address: node.publicAddress, hostname, stateDir: node.stateDir, capabilities: { lxc: true, kvm: false, kvm_accel: null } });
    expect(e.node_id).toBe(node.nodeId);
    await node.startAgent();
  };

  it("stops its slivers' forwarding at its next contact, keeps them running, and forwards again once enrolled again", async () => {
    hostname = (await admin.getNode(node.nodeId)).hostname;
    // The node decommissioned above comes back by enrolling again.
    await enrollAgain();
    const s = await node.runningSliver('lc_three');
    await admin.revokeNodeKey(node.nodeId);
    await until('the forwarded port to stop answering', async () => !reachable(s.ports.first, 'lc_three'), 30_000);
    expect(existsSync(join(node.stateDir, 'revoked'))).toBe(true);
    expect(containerState(s.id)).toBe('RUNNING');
    // A restart does not bring the forwarding back.
    await node.stopAgent();
    await node.startAgent();
    await new Promise((r) => setTimeout(r, 3000));
    expect(reachable(s.ports.first, 'lc_three')).toBe(false);

    await enrollAgain();
    expect(existsSync(join(node.stateDir, 'revoked'))).toBe(false);
    await until('the forwarded port to answer again', async () => reachable(s.ports.first, 'lc_three'), 60_000);
  }, 240_000);
});
