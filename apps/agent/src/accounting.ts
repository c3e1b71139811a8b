// Accounting: what each sliver uses — memory and CPU from its instance driver, bytes on the wire
// from the network driver (one command for all slivers), exclusive disk bytes from the storage
// pool's qgroups (which need a commit, so read at most once a minute). The reports on the clock
// read them afresh; the ones a change sends at once reuse them (a new sliver's are read).
import type { ObservedSliver } from '@planetlite/api';
import { errorFields } from '@planetlite/host';
import type { Logger } from '@planetlite/core';
import type { InstanceDriver } from '@planetlite/instance';
import type { NetworkDriver, SliverCounters } from '@planetlite/network';
import type { StorageDriver } from '@planetlite/storage';

const DISK_USAGE_EVERY_MS = 60_000;

export type Usage = Pick<ObservedSliver, 'memory_bytes' | 'cpu_seconds' | 'disk_bytes' | 'net_rx_bytes' | 'net_tx_bytes'>;

export class Accounting {
  readonly #storage: StorageDriver;
  readonly #network: NetworkDriver;
  readonly #log: Logger;
  #disk: { at: number; bytes: Map<string, number> } = { at: 0, bytes: new Map() };
  /** The last figures read: a report that is not fresh takes them as they are. */
  #net = new Map<string, SliverCounters>();
  readonly #own = new Map<string, Usage>();

  constructor(opts: { storage: StorageDriver; network: NetworkDriver; log: Logger }) {
    this.#storage = opts.storage;
    this.#network = opts.network;
    this.#log = opts.log;
  }

  /** Node-wide figures of one report: wire counters and disk bytes of every sliver (fresh: false,
   * both as last read: the qgroup read commits the pool, and with thousands of roots a change's
   * report must not make its build wait behind that). */
  async read(fresh = true): Promise<{ net: Map<string, SliverCounters>; disk: Map<string, number> }> {
    if (!fresh) return { net: this.#net, disk: this.#disk.bytes };
    this.#net = await this.#network.counters().catch((err: unknown) => {
      this.#log.debug(errorFields(err), 'reading network counters failed');
      return new Map<string, SliverCounters>();
    });
    return { net: this.#net, disk: await this.#diskUsage() };
  }

  /** One sliver's usage, from the node-wide figures and its instance driver (null: none runs it
   * here); fresh: false, its memory and cpu as last read, when they were. */
  async usage(id: string, driver: InstanceDriver | null, node: { net: Map<string, SliverCounters>; disk: Map<string, number> }, fresh = true): Promise<Usage> {
    const out: Usage = { ...(fresh ? undefined : this.#own.get(id)) };
    if (fresh || !this.#own.has(id)) {
      const mem = driver ? await driver.memoryBytes(id).catch(() => null) : null;
      if (mem !== null) out.memory_bytes = mem;
      const cpu = driver ? await driver.cpuSeconds(id).catch(() => null) : null;
      if (cpu !== null) out.cpu_seconds = Math.round(cpu * 1000) / 1000;
      this.#own.set(id, { ...out });
    }
    const bytes = node.disk.get(id);
    if (bytes !== undefined) out.disk_bytes = bytes;
    const wire = node.net.get(id);
    if (wire) Object.assign(out, { net_rx_bytes: wire.rxBytes, net_tx_bytes: wire.txBytes });
    return out;
  }

  /** Forgets the figures of slivers that are not in `live`. */
  keepOnly(live: ReadonlySet<string>): void {
    for (const id of this.#own.keys()) if (!live.has(id)) this.#own.delete(id);
  }

  /** Exclusive disk bytes of every root; qgroup numbers need a commit, so at most once a minute. */
  async #diskUsage(): Promise<Map<string, number>> {
    if (Date.now() - this.#disk.at >= DISK_USAGE_EVERY_MS) {
      this.#disk.at = Date.now();
      try {
        const all = await this.#storage.usageAll();
        this.#disk.bytes = new Map([...all].map(([id, u]) => [id, u.exclusiveBytes]));
      } catch (err) {
        this.#log.debug(errorFields(err), 'reading disk usage failed');
      }
    }
    return this.#disk.bytes;
  }
}
