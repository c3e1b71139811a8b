// What the qemu driver's check() reads from the host: tools, devices, and which accelerator
// actually boots a guest here (/dev/kvm may be missing, or may open and then hang guests).
import { constants } from 'node:fs';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tryRun } from '@planetlite/host';
import { accelArgs, QEMU, QEMU_SANDBOX, type Accel } from './config.js';
import { PROBE_MARKER } from './initramfs.js';

/** Tools the driver runs (@planetlite/host's TOOL_PACKAGES names their packages). */
export const VM_TOOLS = [QEMU, 'ip', 'timeout', 'dpkg-deb', 'xz'] as const;

export async function canOpen(path: string): Promise<boolean> {
  return access(path, constants.R_OK | constants.W_OK).then(
    () => true,
    () => false,
  );
}

export interface AccelProbeOptions {
  /** A kernel and the node-built initramfs (its /init answers `planetlite.probe`). */
  kernel: string;
  initrd: string;
  /** Wall-clock limit of one probe boot; a guest that hangs is killed at it. Default 10 s under
   * KVM (a hung guest must not hold the agent long) and 120 s under TCG (≈ 6 s on an idle core,
   * 23 s and more on a busy 2-core machine; the check runs in the background). */
  deadlineS?: number;
  /** Skip the TCG boot and answer 'tcg' when KVM is not usable (a TCG probe costs ≈ 2–3 s of CPU). */
  assumeTcg?: boolean;
}

/**
 * Boots the kernel once with `planetlite.probe` under accel: passes when the initramfs's marker
 * reaches the serial console and qemu exits by itself before the deadline. SIGKILL at the
 * deadline, so a guest hung inside KVM cannot hold the agent.
 */
export async function probeBoot(accel: Accel, opts: AccelProbeOptions): Promise<boolean> {
  const dir = await mkdtemp(join(tmpdir(), 'planetlite-accel-probe-'));
  try {
    const log = join(dir, 'console.log');
    const deadlineS = opts.deadlineS ?? (accel === 'kvm' ? 10 : 120);
    const args = [...accelArgs(accel), '-m', '128', '-smp', '1', '-nodefaults', '-display', 'none', '-no-reboot'];
    args.push('-kernel', opts.kernel, '-initrd', opts.initrd, '-serial', `file:${log}`, '-sandbox', QEMU_SANDBOX);
    args.push('-append', 'console=ttyS0 panic=-1 quiet planetlite.probe');
    const ran = await tryRun('timeout', ['-s', 'KILL', String(deadlineS), QEMU, ...args], { timeoutMs: (deadlineS + 10) * 1000 });
    return ran !== null && (await readFile(log, 'utf8').catch(() => '')).includes(PROBE_MARKER);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The accelerator VM slivers get on this host, for the agent's `kvm_accel` capability: 'kvm' when
 * /dev/kvm opens and a probe boot under KVM passes, else 'tcg' when one under TCG passes, else
 * null (qemu cannot boot this kernel at all).
 */
export async function probeAccel(opts: AccelProbeOptions): Promise<Accel | null> {
  if ((await canOpen('/dev/kvm')) && (await probeBoot('kvm', opts))) return 'kvm';
  if (opts.assumeTcg) return 'tcg';
  return (await probeBoot('tcg', opts)) ? 'tcg' : null;
}
