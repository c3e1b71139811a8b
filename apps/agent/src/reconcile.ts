// Reconcile: from the desired state and what the host actually has, make the host match. A pass
// probes the host once, asks the planner (planner.ts) which slivers need work and which steps,
// and hands the steps to the builder (builder.ts), which drives the drivers. Every step is
// idempotent, so an agent killed at any instant converges on its next pass. Work on one sliver
// never waits for another; the shared nftables table is applied under one lock.
import pLimit, { type LimitFunction } from 'p-limit';
import { errorFields } from '@planetlite/host';
import type { DesiredSliver, DesiredState, ObservedSliver } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import type { InstanceDriver, InstanceState } from '@planetlite/instance';
import { Accounting } from './accounting.js';
import { Builder, type Fetcher } from './builder.js';
import type { Drivers } from './drivers.js';
import type { ImageIndex } from './images.js';
import { instanceStates } from './instances.js';
import type { Ledger, SliverRecord } from './ledger.js';
import { docKey, fetchStatus, planPass, planSliver, planTeardown } from './planner.js';

export type { Fetcher } from './builder.js';
export type { Drivers } from './drivers.js';

interface Status {
  state: ObservedSliver['state'];
  error: string | null;
}

export class Reconciler {
  readonly #d: Drivers;
  readonly #ledger: Ledger;
  readonly #log: Logger;
  readonly #builder: Builder;
  readonly #accounting: Accounting;
  /** One chain of work per sliver: a new pass for a sliver waits only for that sliver. */
  readonly #queues = new Map<string, Promise<void>>();
  readonly #status = new Map<string, Status>();
  /** Desired document of each sliver as last carried out in full: an unchanged one costs one state probe. */
  readonly #done = new Map<string, string>();
  #tableRebuilt = false;
  #desired: DesiredState | null = null;

  /** Slivers worked on at once: a burst of a thousand new slivers must not fork a thousand
   * snapshots and lxc-starts at the same instant, and one slow sliver must not hold up the rest. */
  readonly #limit: LimitFunction;

  constructor(opts: { drivers: Drivers; ledger: Ledger; images: ImageIndex; log: Logger; maxSlots: number; concurrency?: number; fetcher?: Fetcher | null; forwarding?: () => boolean; extraKeys?: (rec: SliverRecord) => string[] }) {
    this.#limit = pLimit(opts.concurrency ?? 6);
    this.#d = opts.drivers;
    this.#ledger = opts.ledger;
    this.#log = opts.log;
    this.#builder = new Builder({ drivers: opts.drivers, ledger: opts.ledger, images: opts.images, fetcher: opts.fetcher ?? null, log: opts.log, maxSlots: opts.maxSlots, desired: () => this.#desired, ...(opts.forwarding ? { forwarding: opts.forwarding } : {}), ...(opts.extraKeys ? { extraKeys: opts.extraKeys } : {}) });
    this.#accounting = new Accounting({ storage: opts.drivers.storage, network: opts.drivers.network, log: opts.log });
  }

  /** Rewrites the nftables table now (forwarding was cut or restored). */
  refreshForwarding(): Promise<void> {
    return this.#builder.applyTable();
  }

  /**
   * One pass; resolves when every sliver's work from this pass is done. The host is probed once
   * for all slivers; a sliver whose part of the document is unchanged since its last full pass,
   * and whose instance is still in the state that pass left, costs nothing more.
   */
  async reconcile(doc: DesiredState): Promise<void> {
    this.#desired = doc;
    const host = await this.#builder.host();
    const plan = planPass(doc, host, this.#ledger.all(), this.#done);
    const work: Promise<void>[] = [];
    // The first pass of this process rebuilds the nftables table from the ledger and the
    // document: what a previous process left half-done there goes.
    if (!this.#tableRebuilt) {
      this.#tableRebuilt = true;
      work.push(this.#builder.applyTable().catch((err: unknown) => {
        this.#tableRebuilt = false;
        this.#log.warn(errorFields(err), 'rebuilding the nftables table failed; the next pass retries');
      }));
    }
    for (const id of plan.teardown) {
      const kind = this.#ledger.get(id)?.kind ?? host.instances.get(id)?.kind ?? 'lxc';
      work.push(this.#enqueue(id, () => this.#teardown(id, kind)));
    }
    for (const s of plan.ensure) work.push(this.#enqueue(s.id, () => this.#ensure(s)));
    this.#log.debug({ wanted: plan.ensure.length + plan.unchanged, teardown: plan.teardown.length, unchanged: plan.unchanged, work: work.length }, 'reconcile pass');
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
    const states = await instanceStates(this.#d.instances);
    const usage = await this.#accounting.read();
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
      const driver = this.#builder.driverOf(id);
      const now = states.get(id)?.state ?? 'absent';
      // Before this agent has worked on a sliver (say, after a restart), its state is what the host shows.
      let state: ObservedSliver['state'] = st?.state ?? observedState(now);
      let error = st?.error ?? null;
      const leaving = this.#desired !== null && (!d || d.desired === 'deleted');
      if (leaving && state !== 'failed') state = 'deleting';
      // Settled as running, nothing under way for it, and yet down: its init or its VM died.
      if (state === 'running' && d?.desired === 'running' && (now === 'stopped' || now === 'absent') && this.#done.has(id) && !this.#queues.has(id)) {
        const why = (await driver?.exitReason?.(id).catch(() => null)) ?? null;
        state = 'failed';
        error = `${rec.kind === 'kvm' ? 'the VM' : 'the container'} stopped by itself${why ? ` (${why})` : ''}; a restart action or the next full pass starts it again`;
      }
      out.push({ id, state, error, address: this.#d.network.address({ slot: rec.slot }).sliverAddress, ...(await this.#accounting.usage(id, driver, usage)) });
    }
    return out;
  }

  /** Runs the last document again (an image arrived, a fetch failed). */
  again(): Promise<void> {
    return this.#desired ? this.reconcile(this.#desired) : Promise.resolve();
  }

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

  /** Slivers this node holds, for the memory watchdog (which never looks at anything else). */
  slivers(): Array<{ id: string; slice: string }> {
    return this.#ledger.all().map((r) => ({ id: r.id, slice: r.slice }));
  }

  /** The instance driver that runs a sliver here, when it is ready (console logs, memory). */
  driverOf(id: string): InstanceDriver | null {
    return this.#builder.driverOf(id);
  }

  /** Resident memory of a sliver, for the memory watchdog; null when nothing runs it. */
  memoryOf(id: string): Promise<number | null> {
    return this.driverOf(id)?.memoryBytes(id) ?? Promise.resolve(null);
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
    await this.#builder.kill(id);
    if (!s || s.desired === 'deleted') return restore ? 'restore' : 'restart';
    void this.#enqueue(id, async () => {
      // The newest document's version of the sliver: it may have changed meanwhile.
      const now = this.#desired?.slivers.find((d) => d.id === id);
      if (now && now.desired !== 'deleted') await this.#ensure(now, restore);
    });
    return restore ? 'restore' : 'restart';
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

  /** One sliver's turn: read what it is, plan, build. */
  async #ensure(s: DesiredSliver, restore = false): Promise<void> {
    const want = docKey(s);
    try {
      const plan = planSliver(await this.#builder.facts(s, { done: this.#done.get(s.id) === want, restore }));
      if (plan.action === 'none') return;
      this.#done.delete(s.id);
      switch (plan.action) {
        case 'wait':
          this.#status.set(s.id, { state: plan.state, error: plan.error });
          break;
        case 'fetch':
          this.#status.set(s.id, fetchStatus(s.image.name, this.#builder.fetch(plan.image)));
          break;
        case 'build':
          // A frozen sliver is not running; the API's states have no 'frozen', so it shows as
          // stopped with desired 'frozen'.
          this.#status.set(s.id, { state: await this.#builder.build(s, plan, () => this.#status.set(s.id, { state: 'provisioning', error: null })), error: null });
          break;
      }
      if (this.#status.get(s.id)?.state !== 'provisioning') this.#done.set(s.id, want);
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.#log.warn({ sliver: s.id, slice: s.slice, ...errorFields(err) }, 'sliver could not be brought to its desired state');
      this.#status.set(s.id, { state: 'failed', error });
    }
  }

  async #teardown(id: string, kind: 'lxc' | 'kvm'): Promise<void> {
    this.#done.delete(id);
    const plan = planTeardown(this.#builder.readiness(kind));
    if (plan.action === 'wait') {
      this.#log.warn({ sliver: id, err: plan.error }, 'sliver teardown failed; the next pass retries');
      this.#status.set(id, { state: 'failed', error: plan.error });
      return;
    }
    try {
      await this.#builder.teardown(id, kind, plan.steps);
      this.#status.delete(id);
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.#log.warn({ sliver: id, ...errorFields(err) }, 'sliver teardown failed; the next pass retries');
      this.#status.set(id, { state: 'failed', error: `teardown: ${error}` });
    }
  }
}

function observedState(state: InstanceState): ObservedSliver['state'] {
  return state === 'running' ? 'running' : state === 'absent' ? 'provisioning' : 'stopped';
}
