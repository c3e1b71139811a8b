// The network drivers' one error type, with a stable code the agent can act on (as
// packages/storage's StorageError). A failed host command stays a CommandError, kept as the cause.
import { DriverError } from '@planetlite/host';

export type NetworkErrorCode =
  /** Bad options or specs (addresses, subnets, slots, port windows, rates), refused before the host is touched. */
  | 'invalid_spec'
  | 'missing_tool'
  /** The kernel lacks nftables or tc support, or the namespace is missing. */
  | 'missing_kernel_feature'
  /** The public address is not where the options say. */
  | 'public_address'
  /** A device name is held by something that is not this sliver's. */
  | 'device_conflict'
  | 'not_attached';

export class NetworkError extends DriverError<NetworkErrorCode> {
  override name = 'NetworkError';
}

export function isNetworkError(err: unknown, code?: NetworkErrorCode): err is NetworkError {
  return err instanceof NetworkError && (code === undefined || err.code === code);
}
