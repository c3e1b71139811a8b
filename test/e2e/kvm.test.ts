// KVM slivers end to end (issue 5), on one node whose agent runs VM slivers (vm 'auto': on this
// machine that probe falls back to TCG). A kvm slice's sliver boots as a qemu VM on the sliver's
// own btrfs snapshot, the experimenter sshes in through the same forwarded port scheme as for
// containers, and finds the image's kernel (not the host's) on a virtual machine; an LXC sliver of
// another slice runs beside it on the same node. Restart, the console log, and delete leaving
// nothing (no qemu, no tap, no socket, no VM dir) are checked too.
//
// Addresses 198.18.240-249.0/24 and sliver subnets 10.140-149.0.0/24, apart from the other files.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import type { PlanetLiteClient, Sliver } from '@planetlite/api';
import { deviceNames } from '@planetlite/network';
import { sliverLeftovers } from '../harness/node.ts';
import { startOneNode, until, type OneNode } from '../harness/one-node.ts';

let node: OneNode;
let admin: PlanetLiteClient;

beforeAll(async () => {
  node = await startOneNode({
    site: 'kvm',
    octets: [240, 10],
    sliverSubnet: (o) => `10.${140 + (o % 10)}.0.0/24`,
    image: { name: 'tiny', file: 'tiny.tar' },
    agentSettings: { vm: 'auto' },
  });
  ({ admin } = node);
}, 300_000);

afterAll(async () => {
  await node?.close();
}, 180_000);

async function running(id: string, ms = 180_000): Promise<Sliver> {
  return until(`sliver ${id} to run`, async () => {
    const s = await admin.getSliver(id);
    if (s.state === 'failed') throw new Error(`sliver ${id} failed: ${s.error}`);
    return s.state === 'running' ? s : null;
  }, ms);
}

/** qemu processes of this sliver (its VM dir is on their command line). */
function qemuOf(id: string): string[] {
  try {
    return execFileSync('pgrep', ['-f', `qemu-system.*${id}`], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

describe('kvm slivers', () => {
  let vm: Sliver;
  let ct: Sliver;

  it('are placed only once the node says it can run VMs, and then boot the image as a VM beside a container', async () => {
    const caps = await until('the node to report that it runs VMs', async () => {
      const n = await admin.getNode(node.nodeId);
      return n.capabilities.kvm ? n.capabilities : null;
    }, 180_000);
    expect(caps.kvm_accel).toMatch(/^(kvm|tcg)$/);

    await admin.createSlice({ name: 'kvm_vm', description: 'a VM sliver', url: 'https://example.org', kind: 'kvm', image: 'tiny', resources: { memory_mb: 256 } });
    await admin.createSlice({ name: 'kvm_ct', description: 'a container beside it', url: 'https://example.org', image: 'tiny' });
    const [v, c] = await Promise.all([admin.createSliver('kvm_vm', node.nodeId), admin.createSliver('kvm_ct', node.nodeId)]);
    [vm, ct] = await Promise.all([running(v!.id), running(c!.id)]);
    expect(vm.kind).toBe('kvm');

    // ssh -p PORT SLICE@NODE, the lowest forwarded port, as for a container.
    const inVm = await until('ssh into the VM', async () => node.ssh(vm.ports.first, 'kvm_vm', 'cat /etc/slicename; id -un; uname -r; cat /sys/class/dmi/id/sys_vendor'), 60_000);
    const [slicename, user, kernel, vendor] = inVm.split('\n');
    expect(slicename).toBe('kvm_vm');
    expect(user).toBe('kvm_vm');
    expect(kernel).not.toBe(release()); // the image's (or node's VM) kernel, not the host's
    expect(vendor).toBe('QEMU'); // a virtual machine
    const inCt = await until('ssh into the container', async () => node.ssh(ct.ports.first, 'kvm_ct', 'cat /etc/slicename; uname -r'), 30_000);
    expect(inCt).toBe(`kvm_ct\n${release()}`); // a container shares the host's kernel
    // Its link is a tap (qemu holds it open), capped each way like a container's veth.
    const tap = deviceNames(vm.id).hostIf;
    expect(execFileSync('ip', ['-n', node.ns, '-d', 'link', 'show', tap], { encoding: 'utf8' })).toMatch(/tun type tap/);
    expect(execFileSync('tc', ['-n', node.ns, 'qdisc', 'show', 'dev', tap], { encoding: 'utf8' })).toMatch(/htb/);
    console.log(`VM sliver: kernel ${kernel} (host ${release()}), accel ${caps.kvm_accel}`);
  }, 420_000);

  it('lets its members in through the node\'s front door (ssh SLICE@NODE), as a container', async () => {
    const inVm = await until('ssh into the VM through the front door', async () => node.sshAsync(22, 'kvm_vm', 'cat /etc/slicename; cat /sys/class/dmi/id/sys_vendor').catch(() => null), 60_000);
    expect(inVm).toBe('kvm_vm\nQEMU');
  }, 120_000);

  it('shows its serial console through the registry', async () => {
    const log = await until('the console log to reach the registry', async () => {
      const c = await admin.getSliverConsole(vm.id).catch(() => null);
      return c && /Server listening on 0\.0\.0\.0 port 22/.test(c.text) ? c : null; // the guest's sshd -e
    }, 60_000);
    expect(log.sliver_id).toBe(vm.id);
  }, 120_000);

  it('restarts as a new boot and answers ssh again', async () => {
    const bootBefore = await node.ssh(vm.ports.first, 'kvm_vm', 'cat /proc/sys/kernel/random/boot_id');
    await admin.sliverAction(vm.id, 'restart');
    const bootAfter = await until('ssh after the restart', async () => {
      const b = node.ssh(vm.ports.first, 'kvm_vm', 'cat /proc/sys/kernel/random/boot_id');
      return b !== bootBefore ? b : null;
    }, 180_000);
    expect(bootAfter).toMatch(/^[0-9a-f-]{36}$/);
    await running(vm.id);
  }, 240_000);

  it('shows a VM that dies as failed, with the reason, and a restart action brings it back', async () => {
    execFileSync('pkill', ['-KILL', '-f', `qemu-system.*${vm.id}`]);
    const dead = await until('the sliver to show failed', async () => {
      const s = await admin.getSliver(vm.id);
      return s.state === 'failed' ? s : null;
    }, 60_000);
    expect(dead.error).toMatch(/the VM stopped by itself/);
    await admin.sliverAction(vm.id, 'restart');
    // It shows failed until the restart's pass has started it again.
    await until('the sliver to run again', async () => (await admin.getSliver(vm.id)).state === 'running', 180_000);
    expect(await until('ssh after the restart', async () => node.ssh(vm.ports.first, 'kvm_vm', 'cat /etc/slicename'), 120_000)).toBe('kvm_vm');
  }, 240_000);

  it('leaves nothing behind when deleted: no qemu, tap, socket or VM dir', async () => {
    expect(qemuOf(vm.id)).toHaveLength(1);
    await admin.deleteSlice('kvm_vm');
    await until('the VM sliver to be gone', async () => admin.getSliver(vm.id).then(() => false, () => true), 120_000);
    expect(qemuOf(vm.id)).toEqual([]);
    const vmDir = join(node.stateDir, 'vm');
    expect(existsSync(vmDir) ? readdirSync(vmDir).filter((f) => f.includes(vm.id)) : []).toEqual([]);
    expect(await sliverLeftovers({ stateDir: node.stateDir, ns: node.ns, ids: [vm.id] })).toEqual([]);
    // The container beside it is untouched.
    expect(node.ssh(ct.ports.first, 'kvm_ct', 'cat /etc/slicename')).toBe('kvm_ct');
    await admin.deleteSlice('kvm_ct');
    await until('the container to be gone', async () => admin.getSliver(ct.id).then(() => false, () => true), 60_000);
  }, 240_000);
});
