// End to end on one node: the agent converges on the limits the host holds, not on the config it
// wrote. (1) `planetlite-agent run` is SIGKILLed right after it has written a sliver's new LXC
// config and before it has put the new memory limit into the running sliver's cgroup; the next
// agent finds the config unchanged and still brings the cgroup to the new limit. (2) A memory
// limit lowered below what the sliver holds is refused by the kernel: the sliver keeps running,
// shows the refusal as its error in the API, and once it frees memory the limit is applied and the
// error goes. (3) Rate caps and the nftables table removed by hand come back on the next pass.
// (4) An agent that cannot see the cgroup hierarchy refuses to run slivers and says why. Addresses 198.18.50-59, sliver subnets 10.180-189.0.0/24 (shared with the agents'
// chaos test: never run both at once).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PlanetLiteClient, Sliver } from '@planetlite/api';
import { containerName } from '@planetlite/instance';
import { deviceNames } from '@planetlite/network';
import { memoryCgroup } from '../harness/cgroup.ts';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';
import { AgentProcess, exec } from '../harness/testbed.ts';

const MiB = 1024 * 1024;
let node: OneNode;
let admin: PlanetLiteClient;
let agent: AgentProcess | null = null;

beforeAll(async () => {
  node = await startOneNode({ site: 'cvg', octets: [50, 10], sliverSubnet: (o) => `10.${180 + (o % 10)}.0.0/24`, image: { name: 'tiny', file: 'tiny.tar' } });
  admin = node.admin;
}, 240_000);

afterAll(async () => {
  await agent?.stop();
  await node?.close();
}, 120_000);

/** The live memory limit of a sliver, as the host's cgroupfs holds it, in MiB. */
const liveMiB = (s: Sliver) => Number(readFileSync(join(memoryCgroup(s.id), 'memory.limit_in_bytes'), 'utf8')) / MiB;
/** The memory limit its LXC config file says, in MiB. */
const configMiB = (s: Sliver) => Number(/^lxc\.cgroup\.memory\.limit_in_bytes = (\d+)$/m.exec(readFileSync(join(node.stateDir, 'lxc', containerName(s.id), 'config'), 'utf8'))?.[1]) / MiB;

describe('the agent converges on what the host has', () => {
  let s: Sliver;

  it('a kill between writing the new config and applying it live: the next agent applies it', async () => {
    s = await node.runningSliver('cvg_kill');
    expect(liveMiB(s)).toBe(512); // the registry's default
    // The same agent as a process of its own, so that it can be SIGKILLed at one step (Node's
    // spawn for its commands, which keeps it slower). The kill lands a few ms after the step's log
    // line, by which time the agent may have applied the limit too: see below.
    await node.stopAgent();
    agent = new AgentProcess(['run', '--state-dir', node.stateDir, '--log-level', 'debug'], { env: { PLANETLITE_SPAWN: 'node' } });
    await agent.waitFor('agent running', (r) => r.msg === 'agent running');
    // Its first pass finds the sliver as the stopped agent left it (the ledger remembers what the
    // same code carried out) and leaves it alone; the kill waits for a pass on the changed document.
    const first = await agent.waitFor('the first pass', (r) => r.msg === 'reconcile pass');
    expect(first).toMatchObject({ whole: true, wanted: 1, unchanged: 1 });
    const killed = agent.killWhen('the lifecycle step after define', (r) => r.msg === 'reconcile step' && r.sliver === s.id && r.step === 'lifecycle');
    await admin.updateSlice('cvg_kill', { resources: { memory_mb: 160 } });
    await killed;
    await agent.exited;
    agent = null;
    // The host as the kill left it: the new config, the old live limit. The kill lands a few ms
    // after the line, and the agent needs about one to write the limit: when it got there first,
    // the old limit is put back, which is what a kill right after the config leaves.
    expect(configMiB(s)).toBe(160);
    if (liveMiB(s) !== 512) writeFileSync(join(memoryCgroup(s.id), 'memory.limit_in_bytes'), String(512 * MiB));
    expect(liveMiB(s)).toBe(512);

    await node.startAgent();
    await until('the live limit to follow the config', async () => liveMiB(s) === 160, 30_000);
    await until('the API to show it running with no error', async () => {
      const now = await admin.getSliver(s.id);
      return now.state === 'running' && now.error === null;
    }, 30_000);
  }, 180_000);

  it('memory lowered below what the sliver holds: a visible error while it runs on, applied once it frees memory', async () => {
    // 96 MiB of anonymous memory, in a session of its own (no swap here: the kernel cannot reclaim it).
    node.ssh(s.ports.first, 'root', `setsid awk 'BEGIN{s=sprintf("%1048576s",""); for(i=0;i<96;i++) a[i]=s" "i; system("sleep 3600")}' </dev/null >/dev/null 2>&1 &`);
    await until('the sliver to hold 96 MiB', async () => Number(readFileSync(join(memoryCgroup(s.id), 'memory.usage_in_bytes'), 'utf8')) > 96 * MiB, 30_000);

    await admin.updateSlice('cvg_kill', { resources: { memory_mb: 48 } });
    const refused = await until('the refusal to show in the API', async () => {
      const now = await admin.getSliver(s.id);
      return now.error ? now : null;
    }, 60_000);
    console.log(`refused limit, as the API shows it: ${refused.state}: ${refused.error}`);
    expect(refused.state).toBe('running');
    expect(refused.error).toMatch(/memory limit 48 MiB not applied, the sliver holds \d+ MiB/);
    expect(liveMiB(s)).toBe(160);
    // It stays visible, pass after pass (the agent retries every 10 s).
    await new Promise((r) => setTimeout(r, 12_000));
    expect((await admin.getSliver(s.id)).error).toMatch(/not applied/);
    expect(node.ssh(s.ports.first, 'root', 'cat /etc/slicename')).toBe('cvg_kill');

    // (busybox here has no pkill)
    node.ssh(s.ports.first, 'root', 'for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = awk ] && kill ${p#/proc/}; done; true');
    await until('the limit to be applied', async () => liveMiB(s) === 48, 60_000);
    await until('the error to go', async () => {
      const now = await admin.getSliver(s.id);
      return now.state === 'running' && now.error === null;
    }, 30_000);
    expect(configMiB(s)).toBe(48);
  }, 180_000);

  it('rate caps and the nftables table changed by hand: the next pass sees it on the host and puts them back', async () => {
    const { hostIf } = deviceNames(s.id);
    const qdiscs = () => exec('ip', ['netns', 'exec', node.ns, 'tc', 'qdisc', 'show', 'dev', hostIf]);
    const table = () => exec('ip', ['netns', 'exec', node.ns, 'nft', 'list', 'table', 'inet', 'planetlite']);
    expect(await qdiscs()).toMatch(/htb 1: root/);
    expect(await table()).toContain(`"${hostIf}" . `);
    await exec('ip', ['netns', 'exec', node.ns, 'tc', 'qdisc', 'del', 'dev', hostIf, 'root']);
    await exec('ip', ['netns', 'exec', node.ns, 'nft', 'flush', 'table', 'inet', 'planetlite']);
    expect(await qdiscs()).not.toMatch(/htb 1: root/);
    // A pass (the next change, the scheduled pull, or this): nothing in the document changed.
    await node.agent!.reconciler!.again();
    await node.agent!.settled();
    expect(await qdiscs()).toMatch(/htb 1: root/);
    expect(await table()).toMatch(/iifname \. ip saddr != @sliver_sources drop/);
    expect(await node.sshAsync(s.ports.first, 'root', 'cat /etc/slicename')).toBe('cvg_kill');
  }, 120_000);

  it('an agent that cannot see the cgroup hierarchy refuses to run slivers, says why in one line, and reports it', async () => {
    await node.stopAgent();
    // What `ip netns exec` does to a process: a mount namespace of its own with a fresh sysfs on
    // /sys, so /sys/fs/cgroup is an empty directory.
    agent = new AgentProcess(['run', '--state-dir', node.stateDir], { wrap: ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'umount -l /sys && mount -t sysfs sysfs /sys && exec "$@"', 'sh'] });
    const refusal = await agent.waitFor('the refusal', (r) => r.msg === 'this node runs no container slivers');
    console.log(`agent without cgroups: ${String(refusal.err)}`);
    expect(refusal.err).toMatch(/^lxc driver: refusing to run slivers without their memory, cpu, pids limits: no cgroup hierarchy is visible to this process/);
    expect(String(refusal.err)).not.toContain('\n');
    await agent.waitFor('agent running', (r) => r.msg === 'agent running');
    // Reported: the node runs no containers now, and the sliver says why.
    await until('the node to report lxc: false', async () => (await admin.getNode(node.nodeId)).capabilities.lxc === false, 60_000);
    const shown = await until('the sliver to show the refusal', async () => {
      const now = await admin.getSliver(s.id);
      return now.error?.includes('refusing to run slivers without their memory, cpu, pids limits') ? now : null;
    }, 60_000);
    expect(shown.state).toBe('failed');
    // Nothing of it was touched meanwhile: it still runs, on its limits.
    expect(node.ssh(s.ports.first, 'root', 'cat /etc/slicename')).toBe('cvg_kill');
    expect(liveMiB(s)).toBe(48);
    await agent.stop();
    agent = null;

    await node.startAgent();
    await until('the sliver to show running again', async () => {
      const now = await admin.getSliver(s.id);
      return now.state === 'running' && now.error === null;
    }, 60_000);
    expect((await admin.getNode(node.nodeId)).capabilities.lxc).toBe(true);
  }, 180_000);
});
