// Reconcile: from the desired state and what the host actually has, make the host match. A pass
// probes the host once, asks the planner (planner.ts) which slivers need work and which steps,
// and hands the steps to the builder (builder.ts), which drives the drivers. Every step is
// idempotent, so an agent killed at any instant converges on its next pass. Work on one sliver
// never waits for another; the shared nftables table is applied under one lock.
import pLimit, { type LimitFunction } from 'p-limit';
import { errorFields, nextTurn, turnDue } from '@planetlite/host';
import type { DesiredSliver, DesiredState, ObservedSliver, WatchdogHold } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import type { InstanceDriver, InstanceState, Psi } from '@planetlite/instance';
import { Accounting } from './accounting.js';
import { Builder, type Fetcher } from './builder.js';
import { isTransient, sliverError } from './faults.js';
import type { Drivers } from './drivers.js';
import type { ImageIndex } from './images/records.js';
import { instanceStates } from './instances.js';
import type { Ledger, SliverRecord } from './ledger.js';
import { codeFingerprint } from './fingerprint.js';
import { carryDocKeys, docKey, fetchStatus, planPass, planSliver, planTeardown } from './planner.js';
import { nodeBounds, screenDesiredState } from './screen.js';
import { SshdWatch } from './sshd-watch.js';
import { WarmPool, type WarmPoolSettings } from './warm-pool.js';

export type { Fetcher } from './builder.js';
export type { Drivers } from './drivers.js';

interface Status {
  state: ObservedSliver['state'];
  error: string | null;
  /** The image this sliver waits for: its progress is read when the sliver is reported. */
  fetching?: string;
}

/** The whole node is probed at least this often while documents come (wholeDue()). */
const WHOLE_PROBE_EVERY_MS = 60_000;

export class Reconciler {
  readonly #d: Drivers;
  readonly #ledger: Ledger;
  readonly #log: Logger;
  readonly #builder: Builder;
  readonly #accounting: Accounting;
  /** One chain of work per sliver: a new pass for a sliver waits only for that sliver. */
  readonly #queues = new Map<string, Promise<void>>();
  readonly #status = new Map<string, Status>();
  /** docKey of each sliver's document as last carried out in full (kept in the ledger too): an
   * unchanged one costs one state probe. */
  readonly #done = new Map<string, string>();
  /** The code that carries documents out (fingerprint.ts): part of every docKey. */
  readonly #code: string;
  /** Slivers with a live limit the kernel refused: not settled, so every pass tries again. */
  readonly #unapplied = new Set<string>();
  /** Slivers whose last build failed for want of space (faults.ts): retried without a new document. */
  readonly #short = new Set<string>();
  #tableRebuilt = false;
  /** When a pass last probed the whole node (links, rate caps, the nftables table). */
  #wholeProbeAt = 0;
  #desired: DesiredState | null = null;
  /** The slivers of #desired by id. */
  #desiredById = new Map<string, DesiredSliver>();
  /** A sliver's ensure that is queued and has not started: a later pass adds none of its own (the
   * waiting one reads the newest document when it starts), so a burst of documents costs each
   * sliver one build, not one per document. */
  readonly #waitingEnsure = new Map<string, { drift: string | undefined; done: Promise<void> }>();
  /** Slivers the memory watchdog froze (pressure.ts): held as long as their document is the one
   * they were frozen under; passes leave them alone meanwhile. */
  readonly #held = new Map<string, { key: string; thawSeq: number; hold: WatchdogHold }>();
  /** Told when a user's action (a changed document) ends a hold; thawed: by a thaw action. */
  onHoldReleased: (id: string, thawed: boolean) => void = () => undefined;
  /** Told each time this agent starts a sliver's (or a spare's) instance. */
  onStarted: (id: string) => void = () => undefined;
  /** Slivers the last report on the clock found down while settled as running, and the error it
   * showed: a report a change sends at once (no state probe) shows the same until work starts. */
  readonly #stoppedByItself = new Map<string, string>();
  /** Whether the container slivers' sshd came up (sshd-watch.ts). */
  readonly #sshd: SshdWatch;
  /** Slivers whose document the last pass refused (screen.ts), and why. */
  #refused = new Map<string, string>();
  readonly #bounds = nodeBounds();

  /** Slivers worked on at once: a burst of a thousand new slivers must not fork a thousand
   * snapshots and lxc-starts at the same instant, and one slow sliver must not hold up the rest. */
  readonly #limit: LimitFunction;

  /** Spares built ahead (warm-pool.ts); null when the node keeps none. */
  readonly #pool: WarmPool | null;

  constructor(opts: { drivers: Drivers; ledger: Ledger; images: ImageIndex; log: Logger; maxSlots: number; concurrency?: number; fetcher?: Fetcher | null; forwarding?: () => boolean; extraKeys?: (rec: SliverRecord) => string[]; warmPool?: WarmPoolSettings; code?: string }) {
    this.#limit = pLimit(opts.concurrency ?? 6);
    this.#d = opts.drivers;
    this.#ledger = opts.ledger;
    this.#code = opts.code ?? codeFingerprint();
    // What an earlier run of this code carried out in full: its first pass (which probes every
    // state, limit, link and the table) leaves those slivers alone when the host still matches.
    for (const r of opts.ledger.all()) if (r.done) this.#done.set(r.id, r.done);
    this.#log = opts.log;
    this.#sshd = new SshdWatch({ log: opts.log });
    this.#builder = new Builder({ drivers: opts.drivers, ledger: opts.ledger, images: opts.images, fetcher: opts.fetcher ?? null, log: opts.log, maxSlots: opts.maxSlots, desired: () => this.#desired, ...(opts.forwarding ? { forwarding: opts.forwarding } : {}), ...(opts.extraKeys ? { extraKeys: opts.extraKeys } : {}), onStarted: (id) => (this.#sshd.started(id), this.onStarted(id)) });
    this.#accounting = new Accounting({ storage: opts.drivers.storage, network: opts.drivers.network, log: opts.log });
    // Also with no pool configured: it then removes the spares an earlier run's pool left.
    this.#pool = opts.drivers.instances.lxc
      ? new WarmPool({ settings: opts.warmPool ?? { image: null, size: 0 }, builder: this.#builder, ledger: opts.ledger, images: opts.images, storage: opts.drivers.storage, log: opts.log.child({ component: 'warm-pool' }), enqueue: (id, job) => this.#enqueue(id, job) })
      : null;
  }

  /** The warm pool, when the node keeps one (a size and an image). */
  get pool(): WarmPool | null {
    return this.#pool?.image ? this.#pool : null;
  }

  /** Stops the warm pool's work: resolves once the spare under way is built, or removed. */
  close(): Promise<void> {
    return this.#pool?.close() ?? Promise.resolve();
  }

  /** Rewrites the nftables table now (forwarding was cut or restored). */
  refreshForwarding(): Promise<void> {
    return this.#builder.applyTable({ whole: true });
  }

  /**
   * One pass; resolves when every sliver's work from this pass is done. The host is probed once
   * for all slivers; a sliver whose part of the document is unchanged since its last full pass,
   * and whose instance is still in the state that pass left, costs nothing more.
   */
  async reconcile(received: DesiredState, opts: { whole?: boolean } = {}): Promise<void> {
    const doc = this.#screen(received);
    carryDocKeys(this.#desired, doc);
    this.#desired = doc;
    this.#desiredById = new Map(doc.slivers.map((s) => [s.id, s]));
    // Every instance's state and limits, and the listings that cost a command each (links, rate
    // caps, the table) are read by the first pass, by retries and again() (whole): a pass for a
    // new document lists the containers and roots only, so one change costs no reading of the
    // whole node. What the document changes is built in full either way.
    const whole = opts.whole === true || !this.#tableRebuilt;
    if (whole) this.#wholeProbeAt = Date.now();
    const started = performance.now();
    const host = await this.#builder.host(doc.slivers.filter((s) => s.desired !== 'deleted'), { whole });
    const plan = planPass(doc, host, this.#ledger.all(), this.#done, this.#code);
    // A sliver whose new document was refused is left as it is, never torn down for it.
    // Nor is a warm-pool spare: the pool keeps it until the registry hands it out.
    plan.teardown = plan.teardown.filter((id) => !this.#refused.has(id) && !this.#ledger.get(id)?.spare);
    const work: Promise<void>[] = [];
    // The first pass of this process rebuilds the nftables table from the ledger and the
    // document: what a previous process left half-done there goes.
    if (host.tableDrift && this.#tableRebuilt) {
      this.#log.info('the nftables table is not the one last applied (changed by hand?); written again');
      this.#tableRebuilt = false;
    }
    if (!this.#tableRebuilt) {
      this.#tableRebuilt = true;
      work.push(this.#builder.applyTable({ whole: true }).catch((err: unknown) => {
        this.#tableRebuilt = false;
        this.#log.warn(errorFields(err), 'rebuilding the nftables table failed; the next pass retries');
      }));
    }
    for (const id of plan.teardown) {
      const kind = this.#ledger.get(id)?.kind ?? host.instances.get(id)?.kind ?? 'lxc';
      work.push(this.#enqueue(id, () => this.#teardown(id, kind)));
    }
    for (const s of plan.ensure) {
      const drift = host.drift?.get(s.id);
      if (drift) this.#log.info({ sliver: s.id, drift }, 'live settings differ from the desired ones; brought back');
      work.push(this.#ensureQueued(s.id, drift));
    }
    this.#log.debug({ wanted: plan.ensure.length + plan.unchanged, teardown: plan.teardown.length, unchanged: plan.unchanged, work: work.length, whole, planned_ms: Math.round(performance.now() - started) }, 'reconcile pass');
    await Promise.all(work);
    // Spares handed out in this pass are made again behind it (and with no pool, any left go).
    if (this.#pool) void this.#pool.fill();
  }

  /**
   * What the node has, for the observed-state report: every sliver the ledger holds and every
   * sliver the desired state names (fresh: false, with their figures as last read). A sliver
   * still on the host is never reported gone (the registry forgets a deleting sliver that a report
   * leaves out or calls 'deleted').
   */
  async observed(opts: { fresh?: boolean } = {}): Promise<ObservedSliver[]> {
    const fresh = opts.fresh ?? true;
    const desired = this.#desiredById;
    const ids = new Set([...this.#ledger.slivers().map((r) => r.id), ...desired.keys(), ...this.#refused.keys()]);
    // A report on the clock reads every instance's state; one that a change sends at once reads
    // only those of slivers this agent has not worked on yet, and repeats the clock report's
    // verdict on those that stopped by themselves.
    const states = fresh ? await instanceStates(this.#d.instances) : null;
    const usage = await this.#accounting.read(fresh);
    this.#accounting.keepOnly(ids);
    this.#sshd.keepOnly(ids);
    const out: ObservedSliver[] = [];
    const due = turnDue();
    for (const id of ids) {
      // Each sliver's figures are synchronous reads (fresh): other work gets a turn now and then.
      if (due()) await nextTurn();
      const rec = this.#ledger.get(id);
      const d = desired.get(id);
      const st = this.#statusNow(id);
      if (!rec) {
        // Nothing on this node: gone if it was being deleted; otherwise not built yet.
        if (d?.desired === 'deleted') out.push({ id, state: 'deleted' });
        else if (st) out.push({ id, ...st });
        continue;
      }
      const driver = this.#builder.driverOf(id);
      const probe = async () => states?.get(id)?.state ?? (states || !driver ? 'absent' : await driver.state(id).catch(() => 'absent' as const));
      // Before this agent has worked on a sliver (say, after a restart), its state is what the host shows.
      let state: ObservedSliver['state'] = st?.state ?? observedState(await probe());
      let error = st?.error ?? null;
      const leaving = this.#desired !== null && (!d || d.desired === 'deleted');
      if (leaving && state !== 'failed') state = 'deleting';
      // Settled as running, nothing under way for it, and yet down: its init or its VM died.
      if (state === 'running' && d?.desired === 'running' && this.#done.has(id) && !this.#queues.has(id)) {
        if (states) {
          const now = await probe();
          if (now === 'stopped' || now === 'absent') {
            const why = (await driver?.exitReason?.(id).catch(() => null)) ?? null;
            this.#stoppedByItself.set(id, `${rec.kind === 'kvm' ? 'the VM' : 'the container'} stopped by itself${why ? ` (${why})` : ''}; a restart action or the next full pass starts it again`);
          } else this.#stoppedByItself.delete(id);
        }
        const died = this.#stoppedByItself.get(id);
        if (died) {
          state = 'failed';
          error = died;
        }
      }
      const held = this.#held.get(id)?.hold ?? null;
      // Frozen is not running (as for a user's freeze); watchdog_hold says who froze it and why.
      if (held && state === 'running') state = 'stopped';
      // Running as desired and settled, yet unreachable: say so (another error says more).
      if (state === 'running' && error === null && d?.desired === 'running' && this.#done.has(id) && !this.#queues.has(id)) {
        error = await this.#sshd.error(id, driver, fresh);
      }
      out.push({ id, state, error, address: this.#d.network.address({ slot: rec.slot }).sliverAddress, ...(await this.#accounting.usage(id, driver, usage, fresh)), watchdog_hold: held });
    }
    return out;
  }

  /** A sliver's status as it is now: one waiting for its image shows the fetch's progress as
   * the node's image report does, not as it was at the last pass. */
  #statusNow(id: string): Status | undefined {
    const st = this.#status.get(id);
    if (!st?.fetching || st.state !== 'provisioning') return st && { state: st.state, error: st.error };
    return fetchStatus(st.fetching, this.#builder.fetchState(st.fetching));
  }

  /**
   * The document as this node carries it out: slivers refused at the edge (screen.ts) keep the
   * last version this node accepted, or stay out; they show their reason as a failed state.
   * Throws, before any host command, when the document as a whole is unusable.
   */
  #screen(received: DesiredState): DesiredState {
    const { accepted, refused, unnamed } = screenDesiredState(received, this.#bounds);
    for (const why of unnamed) this.#log.warn({ why }, 'desired state: a sliver without a valid id refused');
    for (const [id, why] of refused) {
      this.#log.warn({ sliver: id, why }, 'desired state of a sliver refused');
      this.#status.set(id, { state: 'failed', error: why });
    }
    // A sliver refused before and now accepted or gone: its refusal is over.
    for (const id of this.#refused.keys()) if (!refused.has(id)) this.#status.delete(id);
    this.#refused = refused;
    const kept = (this.#desired?.slivers ?? []).filter((s) => refused.has(s.id));
    return { ...received, slivers: [...accepted, ...kept] };
  }

  /** Slivers showing a live limit not applied yet, or a build that failed for want of space (the
   * agent runs passes until there are none). */
  retriesPending(): number {
    return this.#unapplied.size + this.#short.size;
  }

  /** A whole pass is due: the last one is a minute old. The agent runs one (again()) after the
   * pass for a new document, so that a new sliver never waits for it. */
  wholeDue(): boolean {
    return Date.now() - this.#wholeProbeAt >= WHOLE_PROBE_EVERY_MS;
  }

  /** Runs the last document again (an image arrived, a fetch failed, a retry), with the whole
   * node probed. */
  again(): Promise<void> {
    return this.#desired ? this.reconcile(this.#desired, { whole: true }) : Promise.resolve();
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
    // Spares' images too, and the pool's image, which it is to be refilled from.
    for (const r of this.#ledger.all()) if (r.image_sha256) sha256s.add(r.image_sha256);
    if (this.#pool?.image) names.add(this.#pool.image);
    return { names, sha256s };
  }

  /** Slivers this node holds, for the memory watchdog (which never looks at anything else). */
  slivers(): Array<{ id: string; slice: string }> {
    return this.#ledger.slivers().map((r) => ({ id: r.id, slice: r.slice }));
  }

  /** Slivers and warm-pool spares (slice null) this node holds: every instance it may run. */
  instances(): Array<{ id: string; slice: string | null }> {
    return this.#ledger.all().map((r) => ({ id: r.id, slice: r.spare ? null : r.slice }));
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
    const s = this.#desiredById.get(id);
    const restore = s?.memory_reset === 'restore';
    this.#held.delete(id);
    // Not settled any more: a report meanwhile must not take the kill for a crash.
    this.#markDone(id, null);
    await this.#builder.kill(id);
    if (!s || s.desired === 'deleted') return restore ? 'restore' : 'restart';
    void this.#enqueue(id, async () => {
      // The newest document's version of the sliver: it may have changed meanwhile.
      const now = this.#desiredById.get(id);
      if (now && now.desired !== 'deleted') await this.#ensure(now, restore);
    });
    return restore ? 'restore' : 'restart';
  }

  /** Running slivers whose slice wants them running and that no one holds frozen, with their own
   * memory pressure: the ones the watchdog may freeze. */
  async pressureCandidates(): Promise<Array<{ id: string; slice: string; psi: Psi | null }>> {
    const states = await instanceStates(this.#d.instances);
    const out: Array<{ id: string; slice: string; psi: Psi | null }> = [];
    for (const s of this.#desired?.slivers ?? []) {
      if (s.desired !== 'running' || this.#held.has(s.id) || states.get(s.id)?.state !== 'running') continue;
      const psi = (await this.driverOf(s.id)?.memoryPressure?.(s.id).catch(() => null)) ?? null;
      out.push({ id: s.id, slice: s.slice, psi });
    }
    return out;
  }

  /** The watchdog's freeze: at once (not after its queue), held until thawed by the watchdog or a user acts. */
  async watchdogFreeze(id: string, hold: WatchdogHold): Promise<void> {
    const s = this.#desiredById.get(id);
    if (!s || s.desired !== 'running') throw new Error(`sliver ${id} is not meant to be running here`);
    const driver = this.driverOf(id);
    if (!driver) throw new Error(`no ready driver runs sliver ${id}`);
    this.#held.set(id, { key: docKey(s, this.#code), thawSeq: s.thaw_seq ?? 0, hold });
    try {
      await driver.freeze(id);
    } catch (err) {
      this.#held.delete(id);
      throw err;
    }
  }

  /** The watchdog's thaw of a sliver it holds; one a user has taken back meanwhile is left alone. */
  async watchdogThaw(id: string): Promise<void> {
    if (!this.#held.delete(id)) return;
    const driver = this.driverOf(id);
    if (driver && (await driver.state(id)) === 'frozen') await driver.thaw(id);
  }

  /** Whether the watchdog holds the sliver (the document it was frozen under is current). */
  #stillHeld(s: DesiredSliver): boolean {
    const h = this.#held.get(s.id);
    if (!h) return false;
    if (h.key === docKey(s, this.#code)) return true;
    // The users acted (thaw, freeze, stop, restart…) or the slice changed: the document wins.
    this.#held.delete(s.id);
    const thawed = (s.thaw_seq ?? 0) > h.thawSeq;
    this.#log.info({ sliver: s.id, desired: s.desired, thawed }, 'a new desired state ends the memory watchdog\'s freeze');
    this.onHoldReleased(s.id, thawed);
    return false;
  }

  /** Queues the sliver's ensure, unless one is already waiting: that one then takes the drift too. */
  #ensureQueued(id: string, drift: string | undefined): Promise<void> {
    const waiting = this.#waitingEnsure.get(id);
    if (waiting) {
      waiting.drift = drift ?? waiting.drift;
      return waiting.done;
    }
    const entry = { drift, done: Promise.resolve() };
    this.#waitingEnsure.set(id, entry);
    entry.done = this.#enqueue(id, async () => {
      this.#waitingEnsure.delete(id);
      // The newest document's version; one that no longer wants it has queued its teardown behind.
      const s = this.#desiredById.get(id);
      if (s && s.desired !== 'deleted') await this.#ensure(s, false, entry.drift);
    });
    return entry.done;
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

  /** The sliver's document `key` carried out in full, or (null) no longer. */
  #markDone(id: string, key: string | null): void {
    if (key === null) this.#done.delete(id);
    else this.#done.set(id, key);
    this.#ledger.markDone(id, key);
  }

  /** One sliver's turn: read what it is, plan, build. */
  async #ensure(s: DesiredSliver, restore = false, hostDrift?: string): Promise<void> {
    const want = docKey(s, this.#code);
    this.#stoppedByItself.delete(s.id);
    if (!restore && this.#stillHeld(s)) return;
    try {
      const plan = planSliver(await this.#builder.facts(s, { done: this.#done.get(s.id) === want, restore, ...(hostDrift ? { hostDrift } : {}) }));
      this.#short.delete(s.id);
      if (plan.action === 'none') return;
      this.#markDone(s.id, null);
      switch (plan.action) {
        case 'wait':
          this.#status.set(s.id, { state: plan.state, error: plan.error });
          break;
        case 'fetch':
          this.#status.set(s.id, { ...fetchStatus(s.image.name, this.#builder.fetch(plan.image)), fetching: s.image.name });
          break;
        // A frozen sliver is not running; the API's states have no 'frozen', so it shows as
        // stopped with desired 'frozen'.
        case 'build': {
          const built = await this.#builder.build(s, plan, () => this.#status.set(s.id, { state: 'provisioning', error: null }));
          this.#status.set(s.id, { state: built.ends, error: built.error });
          if (built.error) this.#unapplied.add(s.id);
          else this.#unapplied.delete(s.id);
          break;
        }
      }
      if (this.#status.get(s.id)?.state !== 'provisioning' && !this.#unapplied.has(s.id)) this.#markDone(s.id, want);
    } catch (err) {
      const error = sliverError(err);
      if (isTransient(err)) this.#short.add(s.id);
      this.#log.warn({ sliver: s.id, slice: s.slice, ...errorFields(err) }, 'sliver could not be brought to its desired state');
      this.#status.set(s.id, { state: 'failed', error });
    }
  }

  async #teardown(id: string, kind: 'lxc' | 'kvm'): Promise<void> {
    // The newest document decides, not the pass that queued this: a pass that read the host
    // while a newer document's build ran (a slow read on a full node) saw a sliver its own,
    // older document did not name.
    const wanted = this.#desiredById.get(id);
    if (wanted && wanted.desired !== 'deleted') {
      this.#log.debug({ sliver: id }, 'teardown skipped: a newer document wants the sliver');
      return;
    }
    this.#stoppedByItself.delete(id);
    this.#markDone(id, null);
    this.#unapplied.delete(id);
    this.#short.delete(id);
    if (this.#held.delete(id)) this.onHoldReleased(id, false);
    const plan = planTeardown(this.#builder.readiness(kind), kind);
    if (plan.action === 'wait') {
      this.#log.warn({ sliver: id, err: plan.error }, 'sliver teardown failed; the next pass retries');
      this.#status.set(id, { state: 'failed', error: plan.error });
      return;
    }
    try {
      await this.#builder.teardown(id, kind, plan.steps);
      this.#status.delete(id);
      this.#log.info({ sliver: id }, 'sliver torn down');
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
