// Which driver a call reaches, and what a VM sliver sees while the VM driver is being checked or
// cannot run. The two drivers are recorders: the real ones are tested in packages/instance and
// end to end in test/e2e/kvm.test.ts.
import { describe, expect, it } from 'vitest';
import { createLogger } from '@planetlite/core';
import type { InstanceDriver, InstanceState } from '@planetlite/instance';
import { SliverInstances, type SliverKind } from '../src/instances.js';

const log = createLogger({ name: 'instances-test', level: 'silent' });
const CT = '00000000-0000-4000-8000-000000000001';
const VM = '00000000-0000-4000-8000-000000000002';

function recorder(name: string, ids: string[], check: () => Promise<void> = async () => undefined) {
  const calls: string[] = [];
  const d = {
    name,
    capabilities: { unprivileged: name === 'lxc', freeze: true, memoryLimit: true },
    accel: 'tcg' as const,
    check,
    async states() {
      return new Map<string, InstanceState>(ids.map((id) => [id, 'running']));
    },
    async list() {
      return ids;
    },
    consoleLog: (id: string) => `/vm/${id}/console.log`,
  } as unknown as InstanceDriver & { accel: 'tcg' };
  for (const m of ['define', 'start', 'stop', 'kill', 'freeze', 'thaw', 'state', 'exec', 'destroy', 'memoryBytes', 'cpuSeconds'] as const) {
    (d as unknown as Record<string, unknown>)[m] = async (arg: string | { id: string }) => {
      calls.push(`${m} ${typeof arg === 'string' ? arg : arg.id}`);
      return m === 'state' ? 'running' : null;
    };
  }
  return { d, calls };
}

function setup(check?: () => Promise<void>, vm = true) {
  const lxc = recorder('lxc', [CT]);
  const qemu = recorder('qemu', [VM], check);
  const kinds = new Map<string, SliverKind>([[CT, 'lxc'], [VM, 'kvm']]);
  const inst = new SliverInstances({ lxc: lxc.d, vm: vm ? qemu.d : null, kindOf: (id) => kinds.get(id) });
  return { inst, lxc, qemu };
}

describe('slivers of two kinds on one node', () => {
  it('sends each call to the driver of the sliver\'s kind, once the VM driver passed its check', async () => {
    const { inst, lxc, qemu } = setup();
    let done = false;
    inst.checkVm(log, () => (done = true));
    await inst.vmChecked();
    expect(done).toBe(true);
    expect(inst.kvm()).toEqual({ kvm: true, kvm_accel: 'tcg' });
    await inst.start(CT);
    await inst.start(VM);
    await inst.kill(VM);
    expect(lxc.calls).toEqual([`start ${CT}`]);
    expect(qemu.calls).toEqual([`start ${VM}`, `kill ${VM}`]);
    expect(inst.capabilitiesOf('kvm').unprivileged).toBe(false);
    expect(inst.capabilitiesOf('lxc').unprivileged).toBe(true);
    expect([...(await inst.states()).keys()].sort()).toEqual([CT, VM]);
    expect(inst.consoleFile(VM)).toBe(`/vm/${VM}/console.log`);
  });

  it('keeps VM slivers waiting while the check runs, and does not tear one down meanwhile', async () => {
    let pass!: () => void;
    const { inst, qemu } = setup(() => new Promise<void>((r) => (pass = r)));
    inst.checkVm(log, () => undefined);
    expect(inst.unavailable('kvm')).toMatchObject({ waiting: true });
    expect(inst.unavailable('lxc')).toBeNull();
    expect(await inst.state(VM)).toBe('absent');
    await expect(inst.destroy(VM)).rejects.toThrow(/waiting for the node to check/);
    expect(inst.kvm()).toEqual({ kvm: false, kvm_accel: null });
    pass();
    await inst.vmChecked();
    expect(inst.unavailable('kvm')).toBeNull();
    await inst.destroy(VM);
    expect(qemu.calls).toEqual([`destroy ${VM}`]);
  });

  it('says why VM slivers cannot run when the check failed or VMs are off', async () => {
    const failed = setup(async () => {
      throw new Error('qemu driver: qemu-system-x86_64 (apt-get install qemu-system-x86) not found');
    });
    failed.inst.checkVm(log, () => undefined);
    await failed.inst.vmChecked();
    expect(failed.inst.unavailable('kvm')).toEqual({ waiting: false, why: 'this node cannot run kvm slivers: qemu driver: qemu-system-x86_64 (apt-get install qemu-system-x86) not found' });
    await expect(failed.inst.start(VM)).rejects.toThrow(/cannot run kvm slivers/);
    const off = setup(undefined, false);
    expect(off.inst.unavailable('kvm')).toMatchObject({ waiting: false, why: expect.stringMatching(/off on this node/) });
    expect(off.inst.kvm()).toEqual({ kvm: false, kvm_accel: null });
    await off.inst.destroy(VM); // nothing of it can be here
  });
});
