// Reconcile: from the desired state and what the host actually has, make the host match. Every
// step is idempotent, so an agent killed at any instant converges on its next pass. Work on one
// sliver never waits for another; the shared nftables table is applied under one lock.
import { createHash } from 'node:crypto';
import pLimit, { type LimitFunction } from 'p-limit';
import type { DesiredSliver, DesiredState, ObservedSliver } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import type { InstanceDriver, InstanceState } from '@planetlite/instance';
import type { SliverInstances } from './instances.js';
import { MAX_KBPS, type NetworkDriver, type SliverNetSpec } from '@planetlite/network';
import type { StorageDriver } from '@planetlite/storage';
import type { ImageIndex } from './images.js';
import type { Ledger, SliverRecord } from './ledger.js';
import { keysScript, provisionRoot } from './provision.js';

/** What a pass needs of the image fetcher (fetch.ts). */
export interface Fetcher {
  want(target: { name: string; sha256: string; magnet: string | null; webSeed: string | null }): void;
  seed(target: { name: string; sha256: string; magnet: string | null; webSeed: string | null }): void;
  state(name: string): { state: string; error: string | null; progress: number } | undefined;
}

export interface Drivers {
  storage: StorageDriver;
  /** One driver, or one per sliver kind (instances.ts: SliverInstances). */
  instance: InstanceDriver & Partial<Pick<SliverInstances, 'capabilitiesOf' | 'unavailable' | 'exitReason'>>;
  network: NetworkDriver;
}

interface Status {
  state: ObservedSliver['state'];
  error: string | null;
}

const MiB = 1024 * 1024;
const DISK_USAGE_EVERY_MS = 60_000;

export class Reconciler {
  readonly #d: Drivers;
  readonly #ledger: Ledger;
  readonly #images: ImageIndex;
  readonly #log: Logger;
  readonly #maxSlots: number;
  /** One chain of work per sliver: a new pass for a sliver waits only for that sliver. */
  readonly #queues = new Map<string, Promise<void>>();
  readonly #status = new Map<string, Status>();
  /** Desired document of each sliver as last carried out in full: an unchanged one costs one state probe. */
  readonly #done = new Map<string, string>();
  #applying: Promise<void> = Promise.resolve();
  #tableRebuilt = false;
  #desired: DesiredState | null = null;
  #disk: { at: number; bytes: Map<string, number> } = { at: 0, bytes: new Map() };

  /** Slivers worked on at once: a burst of a thousand new slivers must not fork a thousand
   * snapshots and lxc-starts at the same instant, and one slow sliver must not hold up the rest. */
  readonly #limit: LimitFunction;

  readonly #fetcher: Fetcher | null;

  constructor(opts: { drivers: Drivers; ledger: Ledger; images: ImageIndex; log: Logger; maxSlots: number; concurrency?: number; fetcher?: Fetcher | null }) {
    this.#fetcher = opts.fetcher ?? null;
    this.#limit = pLimit(opts.concurrency ?? 6);
    this.#d = opts.drivers;
    this.#ledger = opts.ledger;
    this.#images = opts.images;
    this.#log = opts.log;
    this.#maxSlots = opts.maxSlots;
  }

  /**
   * One pass; resolves when every sliver's work from this pass is done. The host is probed once
   * for all slivers; a sliver whose part of the document is unchanged since its last full pass,
   * and whose instance is still in the state that pass left, costs nothing more.
   */
  async reconcile(doc: DesiredState): Promise<void> {
    this.#desired = doc;
    const wanted = new Map(doc.slivers.filter((s) => s.desired !== 'deleted').map((s) => [s.id, s]));
    const states = await this.#d.instance.states();
    const present = new Set<string>([
      ...this.#ledger.all().map((r) => r.id),
      ...states.keys(),
      ...(await this.#d.storage.listRoots()),
      ...(await this.#d.network.listAttached()),
    ]);
    const work: Promise<void>[] = [];
    // The first pass of this process rebuilds the nftables table from the ledger and the
    // document: what a previous process left half-done there goes.
    if (!this.#tableRebuilt) {
      this.#tableRebuilt = true;
      work.push(this.#applyNetwork().catch((err: unknown) => {
        this.#tableRebuilt = false;
        this.#log.warn({ err: err instanceof Error ? err.message : String(err) }, 'rebuilding the nftables table failed; the next pass retries');
      }));
    }
    for (const id of present) if (!wanted.has(id)) work.push(this.#enqueue(id, () => this.#destroy(id)));
    let unchanged = 0;
    for (const s of wanted.values()) {
      if (this.#done.get(s.id) === JSON.stringify(s) && settled(s, states.get(s.id))) unchanged++;
      else work.push(this.#enqueue(s.id, () => this.#ensure(s)));
    }
    this.#log.debug({ wanted: wanted.size, present: present.size, unchanged, work: work.length }, 'reconcile pass');
    await Promise.all(work);
  }

  /**
   * What the node has, for the observed-state report: every sliver the ledger holds and every
   * sliver the desired state names. A sliver still on the host is never reported gone (the
   * registry forgets a deleting sliver that a report leaves out or calls 'deleted').
   */
  async observed(): Promise<ObservedSliver[]> {
    const desired = new Map((this.#desired?.slivers ?? []).map((s) => [s.id, s]));
    const ids = new Set([...this.#ledger.all().map((r) => r.id), ...desired.keys()]);
    const states = await this.#d.instance.states();
    // Accounting: one command for every sliver's bytes on the wire, disk usage at most once a minute.
    const net = await this.#d.network.counters().catch((err: unknown) => {
      this.#log.debug({ err: err instanceof Error ? err.message : String(err) }, 'reading network counters failed');
      return new Map<string, { rxBytes: number; txBytes: number }>();
    });
    const disk = await this.#diskUsage();
    const out: ObservedSliver[] = [];
    for (const id of ids) {
      const rec = this.#ledger.get(id);
      const d = desired.get(id);
      const st = this.#status.get(id);
      if (!rec) {
        // Nothing on this node: gone if it was being deleted; otherwise not built yet.
        if (d?.desired === 'deleted') out.push({ id, state: 'deleted' });
        else if (st) out.push({ id, ...st });
        continue;
      }
      // Before this agent has worked on a sliver (say, after a restart), its state is what the host shows.
      let state: ObservedSliver['state'] = st?.state ?? observedState(states.get(id) ?? 'absent');
      let error = st?.error ?? null;
      const leaving = this.#desired !== null && (!d || d.desired === 'deleted');
      if (leaving && state !== 'failed') state = 'deleting';
      // Settled as running, nothing under way for it, and yet down: its init or its VM died.
      const now = states.get(id) ?? 'absent';
      if (state === 'running' && d?.desired === 'running' && (now === 'stopped' || now === 'absent') && this.#done.has(id) && !this.#queues.has(id)) {
        const why = (await this.#d.instance.exitReason?.(id).catch(() => null)) ?? null;
        state = 'failed';
        error = `${rec.kind === 'kvm' ? 'the VM' : 'the container'} stopped by itself${why ? ` (${why})` : ''}; a restart action or the next full pass starts it again`;
      }
      const obs: ObservedSliver = { id, state, error, address: this.#d.network.address({ slot: rec.slot }).sliverAddress };
      const mem = await this.#d.instance.memoryBytes(id).catch(() => null);
      if (mem !== null) obs.memory_bytes = mem;
      const cpu = await this.#d.instance.cpuSeconds(id).catch(() => null);
      if (cpu !== null) obs.cpu_seconds = Math.round(cpu * 1000) / 1000;
      const bytes = disk.get(id);
      if (bytes !== undefined) obs.disk_bytes = bytes;
      const wire = net.get(id);
      if (wire) Object.assign(obs, { net_rx_bytes: wire.rxBytes, net_tx_bytes: wire.txBytes });
      out.push(obs);
    }
    return out;
  }

  /** Runs the last document again (an image arrived, a fetch failed). */
  again(): Promise<void> {
    return this.#desired ? this.reconcile(this.#desired) : Promise.resolve();
  }

  /** Slivers this node holds, for the memory watchdog (which never looks at anything else). */
  /** Images the desired state names (by name and sha256) and the ones slivers here were made
   * from; null before the first document, when nothing is known to be unused. */
  imagesInUse(): { names: Set<string>; sha256s: Set<string> } | null {
    if (!this.#desired) return null;
    const names = new Set<string>();
    const sha256s = new Set<string>();
    for (const s of this.#desired.slivers) {
      if (s.desired === 'deleted') continue;
      names.add(s.image.name);
      if (s.image.sha256) sha256s.add(s.image.sha256);
    }
    for (const r of this.#ledger.all()) if (r.image_sha256) sha256s.add(r.image_sha256);
    return { names, sha256s };
  }

  slivers(): Array<{ id: string; slice: string }> {
    return this.#ledger.all().map((r) => ({ id: r.id, slice: r.slice }));
  }

  /**
   * The memory watchdog's reset: the sliver is killed at once (its memory must be freed now,
   * not after whatever its queue is doing), then brought back to its desired state in its queue,
   * from a fresh copy of its image when its slice asked for that (memory_reset 'restore').
   * Resolves once it is killed, with what happens next.
   */
  async memoryReset(id: string): Promise<'restart' | 'restore'> {
    const s = this.#desired?.slivers.find((d) => d.id === id);
    const restore = s?.memory_reset === 'restore';
    // Not settled any more: a report meanwhile must not take the kill for a crash.
    this.#done.delete(id);
    await this.#d.instance.kill(id);
    if (!s || s.desired === 'deleted') return restore ? 'restore' : 'restart';
    void this.#enqueue(id, async () => {
      if (restore) {
        await this.#d.instance.destroy(id);
        await this.#d.storage.deleteRoot(id);
        this.#ledger.update(id, { image_sha256: null, keys_hash: null });
      }
      // The newest document's version of the sliver: it may have changed meanwhile.
      const now = this.#desired?.slivers.find((d) => d.id === id);
      if (now && now.desired !== 'deleted') await this.#ensure(now);
    });
    return restore ? 'restore' : 'restart';
  }

  /** Exclusive disk bytes of every root; qgroup numbers need a commit, so at most once a minute. */
  async #diskUsage(): Promise<Map<string, number>> {
    if (Date.now() - this.#disk.at >= DISK_USAGE_EVERY_MS) {
      this.#disk.at = Date.now();
      try {
        const all = await this.#d.storage.usageAll();
        this.#disk.bytes = new Map([...all].map(([id, u]) => [id, u.exclusiveBytes]));
      } catch (err) {
        this.#log.debug({ err: err instanceof Error ? err.message : String(err) }, 'reading disk usage failed');
      }
    }
    return this.#disk.bytes;
  }

  #enqueue(id: string, fn: () => Promise<void>): Promise<void> {
    const job = () => this.#limit(fn);
    const next = (this.#queues.get(id) ?? Promise.resolve()).then(job, job);
    const tail = next.catch(() => undefined);
    this.#queues.set(id, tail);
    void tail.then(() => {
      if (this.#queues.get(id) === tail) this.#queues.delete(id);
    });
    return tail;
  }

  async #ensure(s: DesiredSliver): Promise<void> {
    const want = JSON.stringify(s);
    try {
      if (this.#done.get(s.id) === want && settled(s, await this.#d.instance.state(s.id))) return;
      this.#done.delete(s.id);
      await this.#ensureOrThrow(s);
      if (this.#status.get(s.id)?.state !== 'provisioning') this.#done.set(s.id, want);
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.#log.warn({ sliver: s.id, slice: s.slice, err: error }, 'sliver could not be brought to its desired state');
      this.#status.set(s.id, { state: 'failed', error });
    }
  }

  async #ensureOrThrow(s: DesiredSliver): Promise<void> {
    const { storage, instance, network } = this.#d;
    this.#log.debug({ sliver: s.id, image: s.image.name }, 'ensure');
    const kind = s.kind === 'kvm' ? 'kvm' : 'lxc';
    const unavailable = instance.unavailable ? instance.unavailable(kind) : kind === 'lxc' ? null : { why: 'this node runs no VM slivers', waiting: false };
    if (unavailable) {
      this.#status.set(s.id, { state: unavailable.waiting ? 'provisioning' : 'failed', error: unavailable.why });
      return;
    }
    const local = this.#images.byName(s.image.name);
    // The registry's published archive wins over a local one of the same name.
    const image = local && (!s.image.sha256 || local.sha256 === s.image.sha256) ? local : undefined;
    if (!image || !(await storage.hasImage(image.sha256))) {
      const { sha256, magnet, web_seed: webSeed } = s.image;
      if (this.#fetcher && sha256 && (magnet || webSeed)) {
        this.#fetcher.want({ name: s.image.name, sha256, magnet, webSeed });
        const f = this.#fetcher.state(s.image.name);
        // A failed fetch is the sliver's error; the fetcher retries and a new pass follows.
        if (f?.state === 'failed') this.#status.set(s.id, { state: 'failed', error: `image ${s.image.name}: ${f.error}` });
        else this.#status.set(s.id, { state: 'provisioning', error: `fetching image ${s.image.name} (${Math.round((f?.progress ?? 0) * 100)}%)` });
        return;
      }
      this.#status.set(s.id, { state: 'provisioning', error: `image ${s.image.name} is not on this node yet (planetlite-agent image import NAME FILE)` });
      return;
    }
    // Keep seeding what this node holds to other nodes (also after a restart).
    if (this.#fetcher && s.image.magnet && s.image.sha256 === image.sha256) {
      this.#fetcher.seed({ name: s.image.name, sha256: image.sha256, magnet: s.image.magnet, webSeed: s.image.web_seed });
    }
    const step = (name: string) => this.#log.debug({ sliver: s.id, step: name }, 'reconcile step');
    let rec = this.#ledger.claim(s.id, s.slice, this.#maxSlots, kind);
    if (s.reset_seq > rec.reset_seq) {
      // reset: a fresh root filesystem from the image, then start as usual.
      await instance.destroy(s.id);
      await storage.deleteRoot(s.id);
      this.#ledger.update(s.id, { reset_seq: s.reset_seq, image_sha256: null, keys_hash: null });
      rec = this.#ledger.get(s.id)!;
    }
    const fresh = !(await storage.listRoots()).includes(s.id);
    if (fresh) this.#status.set(s.id, { state: 'provisioning', error: null });
    const keysHash = createHash('sha256').update(s.keys.join('\n')).digest('hex');
    // The root filesystem and the network do not depend on each other: build them side by side.
    const [rootfs, net] = await Promise.all([
      (async () => {
        step('root');
        const rootfs = await storage.createRoot(s.id, image.sha256, s.resources.disk_mb * MiB);
        if (fresh || rec.image_sha256 === null) {
          step('provision');
          await provisionRoot({ rootfs, slice: s.slice, keys: s.keys });
          this.#ledger.update(s.id, { image_sha256: image.sha256, keys_hash: keysHash });
        }
        return rootfs;
      })(),
      (async () => {
        step('network');
        const net = await network.attach(this.#netSpec(rec, s));
        step('shaping');
        // After every attach: a device attach() made anew starts without caps. A cap at or
        // above what tc takes is no cap.
        const kbps = s.resources.net_kbps <= MAX_KBPS ? s.resources.net_kbps : null;
        await network.limit(s.id, { inKbps: kbps, outKbps: kbps });
        step('nftables');
        await this.#applyNetwork();
        return net;
      })(),
    ]);
    step('define');
    await instance.define({
      id: s.id,
      hostname: s.slice,
      rootfs,
      memoryMb: s.resources.memory_mb,
      cpuShares: s.resources.cpu_shares,
      cpuCapPercent: s.resources.cpu_cap_percent ?? null,
      pids: 4096,
      idmapBase: (instance.capabilitiesOf?.(kind) ?? instance.capabilities).unprivileged ? rec.idmap_base : null,
      // A container gets the veth's peer moved in; a VM opens the tap, the host end itself.
      net: { link: net.peerIf ?? net.hostIf, address: `${net.sliverAddress}/${net.prefix}`, gateway: net.gateway },
    });
    step('lifecycle');

    // One authoritative probe; each step below says what it leaves (start -d returns once running).
    let state = await instance.state(s.id);
    if (s.desired !== 'stopped' && s.restart_seq > rec.restart_seq && state !== 'absent') {
      await instance.stop(s.id, 10);
      state = 'stopped';
    }
    this.#ledger.update(s.id, { restart_seq: s.restart_seq });
    if (s.desired === 'running' || s.desired === 'frozen') {
      if (state === 'frozen' && s.desired === 'running') {
        await instance.thaw(s.id);
        state = 'running';
      }
      if (state === 'stopped' || state === 'absent') {
        await instance.start(s.id);
        state = 'running';
      }
      if (s.desired === 'frozen' && state === 'running') {
        await instance.freeze(s.id);
        state = 'frozen';
      }
    } else if (state === 'running' || state === 'frozen') {
      await instance.stop(s.id, 10);
      state = 'stopped';
    }
    if (state === 'running' && this.#ledger.get(s.id)?.keys_hash !== keysHash) {
      await instance.exec(s.id, keysScript(s.slice), s.keys.join('\n') + (s.keys.length ? '\n' : ''));
      this.#ledger.update(s.id, { keys_hash: keysHash });
    }
    // A frozen sliver is not running; the API's states have no 'frozen', so it shows as stopped
    // with desired 'frozen'.
    this.#status.set(s.id, { state: state === 'running' ? 'running' : 'stopped', error: null });
    step('done');
  }

  async #destroy(id: string): Promise<void> {
    this.#done.delete(id);
    try {
      await this.#d.instance.destroy(id);
      // The table is rewritten without the sliver before its ledger record goes: a crash or a
      // failed rewrite leaves the record, so a later pass retries (see also reconcile()).
      await this.#applyNetwork();
      await this.#d.network.detach(id);
      await this.#d.storage.deleteRoot(id);
      this.#ledger.release(id);
      this.#status.delete(id);
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.#log.warn({ sliver: id, err: error }, 'sliver teardown failed; the next pass retries');
      this.#status.set(id, { state: 'failed', error: `teardown: ${error}` });
    }
  }

  #netSpec(rec: SliverRecord, s: Pick<DesiredSliver, 'ports'>): SliverNetSpec {
    return { id: rec.id, slot: rec.slot, ports: s.ports, kind: rec.kind === 'kvm' ? 'tap' : 'veth' };
  }

  /** Rewrites the whole nftables table from the ledger and the desired ports; one at a time. */
  #applyNetwork(): Promise<void> {
    this.#applying = this.#applying.then(async () => {
      const ports = new Map((this.#desired?.slivers ?? []).filter((s) => s.desired !== 'deleted').map((s) => [s.id, s.ports]));
      const specs = this.#ledger
        .all()
        .filter((r) => ports.has(r.id))
        .map((r) => this.#netSpec(r, { ports: ports.get(r.id)! }));
      await this.#d.network.apply(specs);
    });
    const done = this.#applying;
    this.#applying = done.catch(() => undefined);
    return done;
  }
}

/** True when the instance is in the state the sliver's desired state asks for. */
function settled(s: DesiredSliver, state: InstanceState | undefined): boolean {
  return s.desired === 'running' ? state === 'running' : s.desired === 'frozen' ? state === 'frozen' : state === 'stopped';
}

function observedState(state: InstanceState): ObservedSliver['state'] {
  return state === 'running' ? 'running' : state === 'absent' ? 'provisioning' : 'stopped';
}
