// The instance drivers' one error type, with a stable code the agent can act on (as
// packages/storage's StorageError). A failed host command stays a CommandError, kept as the cause.
import { DriverError } from '@planetlite/host';

export type InstanceErrorCode =
  /** Bad driver options (paths, names). */
  | 'invalid_options'
  /** A spec or id the driver refuses before touching the host (InvalidSpecError). */
  | 'invalid_spec'
  | 'missing_tool'
  /** The kernel or the host lacks something a driver needs (namespaces, /dev/net/tun, a bootable kernel). */
  | 'missing_kernel_feature'
  /** A call before check() passed. */
  | 'not_checked'
  | 'not_defined'
  /** The sliver is not in a state the call can act on (freeze of a stopped one). */
  | 'wrong_state'
  /** The host cannot do what was asked (freeze without a freezer, unprivileged slivers without idmaps). */
  | 'unsupported'
  | 'rootfs_missing'
  | 'start_failed'
  /** A running sliver's cgroups refused a limit (a memory limit below what it holds). */
  | 'limits_not_applied'
  /** The host cannot enforce the limits slivers are promised (no memory, cpu or pids cgroup visible). */
  | 'missing_limits'
  /** A process that would not die, or a device that is not what it should be. */
  | 'host_broken';

export class InstanceError extends DriverError<InstanceErrorCode> {
  override name = 'InstanceError';
}

export function isInstanceError(err: unknown, code?: InstanceErrorCode): err is InstanceError {
  return err instanceof InstanceError && (code === undefined || err.code === code);
}
