// The seccomp policy every sliver runs under: what LXC's default policy denies, plus the btrfs
// ioctls that make, remove or re-flag subvolumes and change quotas. A sliver's root owns its
// rootfs (a btrfs snapshot with a qgroup limit), and the kernel lets a directory's owner make a
// subvolume or snapshot there without any capability; each new subvolume gets a qgroup of its own,
// outside the sliver's limit, so the disk quota could be escaped with a snapshot per quota's worth.
import { randomUUID } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';

/** The driver's policy file, in its lxcpath: <lxcPath>/planetlite.seccomp. */
export const SECCOMP_POLICY_FILE = 'planetlite.seccomp';

/** Everything LXC 5.0's /usr/share/lxc/config/common.seccomp denies, in its words: the rules
 * after its `[all]`. (reject_force_umount, its umount2 MNT_FORCE rule, comes before `[all]`.) */
export const LXC_DEFAULT_SECCOMP_RULES = ['kexec_load errno 1', 'open_by_handle_at errno 1', 'init_module errno 1', 'finit_module errno 1', 'delete_module errno 1'] as const;

/** linux/btrfs.h */
const BTRFS_IOCTL_MAGIC = 0x94;
/** Direction bits of the asm-generic ioctl encoding (x86, arm, arm64, riscv, s390); powerpc,
 * mips, sparc and alpha encode differently and would need their own numbers. */
const IOC_WRITE = 1;
const IOC_READ = 2;

/** _IOC(dir, 0x94, nr, size) of asm-generic/ioctl.h: dir << 30 | size << 16 | type << 8 | nr. */
function btrfsIoc(dir: number, nr: number, size: number): number {
  if (size >= 1 << 14) throw new Error(`ioctl size ${size} does not fit _IOC_SIZEBITS`);
  return ((dir << 30) | (size << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr) >>> 0;
}

// Argument sizes on every ABI the asm-generic encoding covers (all fields are 64-bit or padded).
/** struct btrfs_ioctl_vol_args: __s64 fd; char name[BTRFS_PATH_NAME_MAX + 1 = 4088]. */
const VOL_ARGS = 4096;
/** struct btrfs_ioctl_vol_args_v2: fd, transid, flags (3 × 8); a 32-byte union (size and
 * qgroup_inherit, or unused[4]); a union of name[BTRFS_SUBVOL_NAME_MAX + 1 = 4040], devid, subvolid. */
const VOL_ARGS_V2 = 4096;
const U64 = 8;
/** struct btrfs_ioctl_received_subvol_args: uuid[16], stransid, rtransid, two struct
 * btrfs_ioctl_timespec { __u64 sec; __u32 nsec; } of 16 bytes, flags, reserved[16]. */
const RECEIVED_SUBVOL_ARGS = 200;
/** The same with the packed 12-byte timespec of 32-bit callers (fs/btrfs/ioctl.c); a 64-bit
 * kernel accepts BTRFS_IOC_SET_RECEIVED_SUBVOL_32 from 64-bit callers too. */
const RECEIVED_SUBVOL_ARGS_32 = 192;
/** struct btrfs_ioctl_quota_ctl_args: __u64 cmd, status. */
const QUOTA_CTL_ARGS = 16;
/** struct btrfs_ioctl_qgroup_assign_args: __u64 assign, src, dst. */
const QGROUP_ASSIGN_ARGS = 24;
/** struct btrfs_ioctl_qgroup_create_args: __u64 create, qgroupid. */
const QGROUP_CREATE_ARGS = 16;
/** struct btrfs_ioctl_qgroup_limit_args: __u64 qgroupid; struct btrfs_qgroup_limit (5 × __u64). */
const QGROUP_LIMIT_ARGS = 48;
/** struct btrfs_ioctl_quota_rescan_args: __u64 flags, progress, reserved[6]. */
const QUOTA_RESCAN_ARGS = 64;

export interface DeniedIoctl {
  /** The request's name in linux/btrfs.h (or fs/btrfs/ioctl.c for the _32 variant). */
  name: string;
  /** Its definition there. */
  macro: string;
  request: number;
}

/** The btrfs ioctls no sliver may make. The quota ones already need CAP_SYS_ADMIN in the
 * initial user namespace, as does destroying a subvolume unless the pool is mounted with
 * user_subvol_rm_allowed; they are denied anyway, so a privileged sliver cannot use them either. */
export const DENIED_BTRFS_IOCTLS: readonly DeniedIoctl[] = [
  { name: 'BTRFS_IOC_SNAP_CREATE', macro: '_IOW(0x94, 1, struct btrfs_ioctl_vol_args)', request: btrfsIoc(IOC_WRITE, 1, VOL_ARGS) },
  { name: 'BTRFS_IOC_SUBVOL_CREATE', macro: '_IOW(0x94, 14, struct btrfs_ioctl_vol_args)', request: btrfsIoc(IOC_WRITE, 14, VOL_ARGS) },
  { name: 'BTRFS_IOC_SNAP_DESTROY', macro: '_IOW(0x94, 15, struct btrfs_ioctl_vol_args)', request: btrfsIoc(IOC_WRITE, 15, VOL_ARGS) },
  { name: 'BTRFS_IOC_DEFAULT_SUBVOL', macro: '_IOW(0x94, 19, __u64)', request: btrfsIoc(IOC_WRITE, 19, U64) },
  { name: 'BTRFS_IOC_SNAP_CREATE_V2', macro: '_IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)', request: btrfsIoc(IOC_WRITE, 23, VOL_ARGS_V2) },
  { name: 'BTRFS_IOC_SUBVOL_CREATE_V2', macro: '_IOW(0x94, 24, struct btrfs_ioctl_vol_args_v2)', request: btrfsIoc(IOC_WRITE, 24, VOL_ARGS_V2) },
  { name: 'BTRFS_IOC_SUBVOL_SETFLAGS', macro: '_IOW(0x94, 26, __u64)', request: btrfsIoc(IOC_WRITE, 26, U64) },
  { name: 'BTRFS_IOC_SET_RECEIVED_SUBVOL', macro: '_IOWR(0x94, 37, struct btrfs_ioctl_received_subvol_args)', request: btrfsIoc(IOC_READ | IOC_WRITE, 37, RECEIVED_SUBVOL_ARGS) },
  { name: 'BTRFS_IOC_SET_RECEIVED_SUBVOL_32', macro: '_IOWR(0x94, 37, struct btrfs_ioctl_received_subvol_args_32)', request: btrfsIoc(IOC_READ | IOC_WRITE, 37, RECEIVED_SUBVOL_ARGS_32) },
  { name: 'BTRFS_IOC_QUOTA_CTL', macro: '_IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)', request: btrfsIoc(IOC_READ | IOC_WRITE, 40, QUOTA_CTL_ARGS) },
  { name: 'BTRFS_IOC_QGROUP_ASSIGN', macro: '_IOW(0x94, 41, struct btrfs_ioctl_qgroup_assign_args)', request: btrfsIoc(IOC_WRITE, 41, QGROUP_ASSIGN_ARGS) },
  { name: 'BTRFS_IOC_QGROUP_CREATE', macro: '_IOW(0x94, 42, struct btrfs_ioctl_qgroup_create_args)', request: btrfsIoc(IOC_WRITE, 42, QGROUP_CREATE_ARGS) },
  // _IOR although the kernel reads the limit from the caller: that is how linux/btrfs.h has it.
  { name: 'BTRFS_IOC_QGROUP_LIMIT', macro: '_IOR(0x94, 43, struct btrfs_ioctl_qgroup_limit_args)', request: btrfsIoc(IOC_READ, 43, QGROUP_LIMIT_ARGS) },
  { name: 'BTRFS_IOC_QUOTA_RESCAN', macro: '_IOW(0x94, 44, struct btrfs_ioctl_quota_rescan_args)', request: btrfsIoc(IOC_WRITE, 44, QUOTA_RESCAN_ARGS) },
  { name: 'BTRFS_IOC_SNAP_DESTROY_V2', macro: '_IOW(0x94, 63, struct btrfs_ioctl_vol_args_v2)', request: btrfsIoc(IOC_WRITE, 63, VOL_ARGS_V2) },
];

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/**
 * The policy file, in LXC's version 2 format (lxc 5.0: a denylist whose rules apply to every ABI
 * the host runs; `[all]` adds each rule for x86_64, i386 and x32 alike). Comments must start a line
 * and stay off rule lines: LXC reads anything after a rule's `]` as one more argument filter.
 *
 * The request is matched on its low 32 bits only (SCMP_CMP_MASKED_EQ with 0xffffffff): ioctl's
 * cmd is an unsigned int, so the kernel drops the upper half of the register, while a plain
 * SCMP_CMP_EQ compares all 64 bits and is bypassed by setting any of the upper ones.
 */
export function renderSeccompPolicy(): string {
  const lines = [
    '2',
    'denylist',
    '# PlanetLite sliver policy; written by @planetlite/instance, do not edit.',
    "# LXC's default policy (common.seccomp): umount -f fails with EACCES; kexec and modules with EPERM.",
    'reject_force_umount',
    '[all]',
    ...LXC_DEFAULT_SECCOMP_RULES,
    '# btrfs: no subvolume or snapshot made, removed or re-flagged, no quota changed (EPERM).',
  ];
  for (const { name, macro, request } of DENIED_BTRFS_IOCTLS) lines.push(`# ${name} = ${macro} = ${hex(request)}`, `ioctl errno 1 [1,${hex(request)},SCMP_CMP_MASKED_EQ,0xffffffff]`);
  return lines.join('\n') + '\n';
}

/** Writes the policy to path unless it already holds it; write then rename, so LXC never reads
 * half a policy (it would refuse to start the sliver, or filter less). */
export async function installSeccompPolicy(path: string): Promise<void> {
  const policy = renderSeccompPolicy();
  if ((await readFile(path, 'utf8').catch(() => null)) === policy) return;
  const tmp = `${path}.tmp-${process.pid}-${randomUUID()}`;
  try {
    await writeFile(tmp, policy, { mode: 0o644 });
    await rename(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
}
