// Sliver networking for the node agent: the driver interface, its registry and the nftables driver.
import type { NetworkDriver, NetworkDriverOptions } from './driver.js';
import { NftablesDriver } from './nftables/driver.js';

export type { NetworkCapabilities, NetworkDriver, NetworkDriverOptions, PortWindow, SliverCounters, SliverNet, SliverNetSpec, SliverRate } from './driver.js';
export { NetworkError, isNetworkError, type NetworkErrorCode } from './errors.js';
export { NftablesDriver } from './nftables/driver.js';
export { renderChanges, renderRuleset, validateSpecs, type RulesetConfig } from './nftables/ruleset.js';
export { deviceNames, ifbName, sliverId } from './nftables/names.js';
export { MAX_KBPS, MIN_KBPS, validateRate } from './nftables/shaping.js';
export { parseSubnet, slotAddress, slotCount, type Ipv4Subnet, type SlotAddress } from './ipv4.js';

/** Network drivers by name; callers test `capabilities`, not names. */
export const networkDrivers: Record<string, (opts: NetworkDriverOptions) => NetworkDriver> = {
  nftables: (opts) => new NftablesDriver(opts),
};
