// One instance driver per sliver kind: what a VM sliver sees while the VM driver is being checked
// or cannot run, and what the node reports it can run. The two drivers are recorders with the
// real drivers' status handling (trackCheck): the real ones are tested in packages/instance and
// end to end in test/e2e/kvm.test.ts.
import { describe, expect, it } from 'vitest';
import { createLogger } from '@planetlite/core';
import { trackCheck, type InstanceDriver, type InstanceDriverStatus, type InstanceState } from '@planetlite/instance';
import { checkInBackground, instanceStates, nodeCapabilities, readiness, type InstanceDrivers } from '../src/instances.js';

const log = createLogger({ name: 'instances-test', level: 'silent' });
const CT = '00000000-0000-4000-8000-000000000001';
const VM = '00000000-0000-4000-8000-000000000002';

function recorder(name: string, ids: string[], check: () => Promise<void> = async () => undefined, accel?: 'kvm' | 'tcg'): InstanceDriver {
  let status: InstanceDriverStatus = { state: 'unchecked' };
  return {
    name,
    capabilities: { unprivileged: name === 'lxc', freeze: true, memoryLimit: true },
    get status() {
      return status;
    },
    check: () => trackCheck((s) => (status = s), async () => {
      await check();
      return accel ? { accel } : undefined;
    }),
    async states() {
      return new Map<string, InstanceState>(ids.map((id) => [id, 'running']));
    },
  } as unknown as InstanceDriver;
}

describe('slivers of two kinds on one node', () => {
  it('lists the instances of every ready driver with its kind, and reports what the checks found', async () => {
    const drivers: InstanceDrivers = { lxc: recorder('lxc', [CT]), kvm: recorder('qemu', [VM], undefined, 'tcg') };
    expect(nodeCapabilities(drivers, 'x86_64')).toEqual({ lxc: false, kvm: false, kvm_accel: null, arch: 'x86_64' });
    await drivers.lxc!.check();
    let done = 0;
    await checkInBackground(drivers, log, () => done++);
    expect(done).toBe(1); // lxc was checked already
    expect(nodeCapabilities(drivers, 'x86_64')).toEqual({ lxc: true, kvm: true, kvm_accel: 'tcg', arch: 'x86_64' });
    expect([...(await instanceStates(drivers))]).toEqual([[CT, { kind: 'lxc', state: 'running' }], [VM, { kind: 'kvm', state: 'running' }]]);
    expect(readiness(drivers, {}, 'kvm')).toEqual({ state: 'ready' });
  });

  it('keeps VM slivers waiting while the check runs, and lists none of them meanwhile', async () => {
    let pass!: () => void;
    const drivers: InstanceDrivers = { lxc: recorder('lxc', [CT]), kvm: recorder('qemu', [VM], () => new Promise<void>((r) => (pass = r))) };
    await drivers.lxc!.check();
    const checked = checkInBackground(drivers, log, () => undefined);
    expect(readiness(drivers, {}, 'kvm')).toEqual({ state: 'checking', why: 'waiting for the node to check that it can run VMs (accelerator probe)' });
    expect(readiness(drivers, {}, 'lxc')).toEqual({ state: 'ready' });
    expect([...(await instanceStates(drivers)).keys()]).toEqual([CT]);
    expect(nodeCapabilities(drivers, 'x86_64')).toMatchObject({ lxc: true, kvm: false, kvm_accel: null });
    pass();
    await checked;
    expect(readiness(drivers, {}, 'kvm')).toEqual({ state: 'ready' });
  });

  it('says why VM slivers cannot run when the check failed or VMs are off', async () => {
    const failed: InstanceDrivers = {
      lxc: recorder('lxc', []),
      kvm: recorder('qemu', [], async () => {
        throw new Error('qemu driver: qemu-system-x86_64 (apt-get install qemu-system-x86) not found');
      }),
    };
    await checkInBackground(failed, log, () => undefined);
    expect(readiness(failed, {}, 'kvm')).toEqual({ state: 'off', why: 'this node cannot run kvm slivers: qemu driver: qemu-system-x86_64 (apt-get install qemu-system-x86) not found' });
    expect(nodeCapabilities(failed, 'x86_64')).toMatchObject({ lxc: true, kvm: false });
    const off: InstanceDrivers = { lxc: recorder('lxc', []) };
    expect(readiness(off, { kvm: 'VM slivers are off on this node (planetlite-agent run --vm off)' }, 'kvm')).toEqual({ state: 'off', why: 'this node cannot run kvm slivers: VM slivers are off on this node (planetlite-agent run --vm off)' });
    expect(nodeCapabilities(off, 'x86_64')).toEqual({ lxc: false, kvm: false, kvm_accel: null, arch: 'x86_64' });
  });
});
