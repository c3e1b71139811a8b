// The builder: carries out the planner's steps for one sliver through the drivers — storage
// (root filesystem), network (link, caps, nftables), instance (define, lifecycle) — and the
// ledger. A new sliver that fails part-way is undone (Reverter): it leaves its ledger record and
// nothing on the host, and the next pass starts it over.
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import type { Logger } from '@planetlite/core';
import { Reverter, errorFields, nextTurn, turnDue } from '@planetlite/host';
import { isInstanceError, type InstanceDriver, type InstanceLimits } from '@planetlite/instance';
import { MAX_KBPS, type SliverNet, type SliverNetSpec, type SliverRate } from '@planetlite/network';
import type { Drivers } from './drivers.js';
import type { ImageIndex } from './images/records.js';
import { instanceList, instanceStates, readiness } from './instances.js';
import type { Ledger, SliverRecord } from './ledger.js';
import { describePlan, keysHash, kindOf, planLifecycle, type HostView, type Readiness, type SliverFacts, type SliverKind, type SliverPlan, type Step, type TeardownStep } from './planner.js';
import { isTransient, keysFault, provisionFault, sliverError } from './faults.js';
import { keysScript, provisionRoot, provisionSpare } from './provision.js';

/** What a pass needs of the image fetcher (fetch.ts). */
export interface Fetcher {
  want(target: { name: string; sha256: string; magnet: string | null; webSeed: string | null }): void;
  seed(target: { name: string; sha256: string; magnet: string | null; webSeed: string | null }): void;
  state(name: string): { state: string; error: string | null; progress: number } | undefined;
}

const MiB = 1024 * 1024;

/** A spare's hostname until it is handed out. */
const SPARE_HOSTNAME = 'spare';
/** A spare's port window: attach() checks one but uses none; no table rule names a spare. */
const NO_PORTS = { first: 1, last: 1 };

type BuildPlan = Extract<SliverPlan, { action: 'build' }>;

/** What the steps of one build hand on to each other. */
interface Build {
  s: DesiredSliver;
  plan: BuildPlan;
  driver: InstanceDriver;
  rec: SliverRecord;
  rootfs: string | null;
  /** Host ids of the root's files are the sliver's plus this (storage.rootIdShift). */
  idShift: number;
  net: SliverNet | null;
  /** A new sliver (its ledger record claimed by this build): its link and instance are undone
   * if the build fails (its root is whenever the build made it: plan.fresh). */
  isNew: boolean;
  /** What the sliver is when done (the lifecycle says). */
  ends: 'running' | 'stopped';
  /** A live limit the kernel refused, or new keys with no room to be written: the sliver runs
   * on, showing this error, until a pass applies it. */
  limitsError: string | null;
  /** How long each step took, ms (logged once the build is done). */
  took: Record<string, number>;
  /** The parts of making its root (the storage driver's), ms. */
  rootParts?: Record<string, number>;
}

/** What a build leaves: the sliver's state, and the error it shows (a limit not applied). */
export interface Built {
  ends: 'running' | 'stopped';
  error: string | null;
}

export class Builder {
  readonly #d: Drivers;
  readonly #ledger: Ledger;
  readonly #images: ImageIndex;
  readonly #fetcher: Fetcher | null;
  readonly #log: Logger;
  readonly #maxSlots: number;
  readonly #desired: () => DesiredState | null;
  readonly #forwarding: () => boolean;
  readonly #extraKeys: (rec: SliverRecord) => string[];
  readonly #onStarted: (id: string) => void;
  #applying: Promise<void> = Promise.resolve();
  /** The apply queued behind the one under way, which later callers join. */
  #nextApply: { whole: boolean; done: Promise<void> } | null = null;
  /** The nftables table as the host listed it (tersely: rules and maps, no entries) right after the
   * last whole apply; null before one. Entries alone do not change the listing. */
  #tableSeen: string | null = null;

  constructor(opts: {
    drivers: Drivers;
    ledger: Ledger;
    images: ImageIndex;
    fetcher: Fetcher | null;
    log: Logger;
    maxSlots: number;
    desired: () => DesiredState | null;
    /** false while the node's key is revoked: the table then forwards nothing to or from any sliver. */
    forwarding?: () => boolean;
    /** Key lines every sliver's authorized_keys holds beside the members' (the front door's). */
    extraKeys?: (rec: SliverRecord) => string[];
    /** Told each time this agent starts an instance (its cgroups are new, their counts at 0). */
    onStarted?: (id: string) => void;
  }) {
    this.#d = opts.drivers;
    this.#ledger = opts.ledger;
    this.#images = opts.images;
    this.#fetcher = opts.fetcher;
    this.#log = opts.log;
    this.#maxSlots = opts.maxSlots;
    this.#desired = opts.desired;
    this.#forwarding = opts.forwarding ?? (() => true);
    this.#extraKeys = opts.extraKeys ?? (() => []);
    this.#onStarted = opts.onStarted ?? (() => undefined);
  }

  readiness(kind: SliverKind): Readiness {
    return readiness(this.#d.instances, this.#d.off ?? {}, kind);
  }

  /** The driver of a sliver's kind (the ledger's, else the given one), when it is ready. */
  driverOf(id: string, kind?: SliverKind): InstanceDriver | null {
    const k = this.#ledger.get(id)?.kind ?? kind ?? 'lxc';
    return this.readiness(k).state === 'ready' ? this.#d.instances[k]! : null;
  }

  /** Each sliver instance on the host and its state (one probe per driver). */
  states(): ReturnType<typeof instanceStates> {
    return instanceStates(this.#d.instances);
  }

  /** What the host has, for a pass: the instances (a directory read per driver) and the roots (one
   * directory read); with `whole`, also every instance's state and live limits (cgroupfs reads, no
   * command), the links (one ip command), the wanted slivers' rate caps (one tc command) and the
   * nftables table (one nft command) against the last one applied. */
  async host(wanted: readonly DesiredSliver[] = [], opts: { whole?: boolean } = { whole: true }): Promise<HostView> {
    const net = this.#d.network;
    const whole = opts.whole === true;
    const [instances, roots, links, rates, table] = await Promise.all([
      whole ? instanceStates(this.#d.instances) : instanceList(this.#d.instances),
      this.#d.storage.listRoots(),
      whole ? net.listAttached() : Promise.resolve([]),
      // Only slivers with a ledger record have been given a link and caps (a spare about to be
      // handed out has none yet: its build caps it).
      (whole ? net.rateDrift?.(new Map(wanted.filter((s) => { const r = this.#ledger.get(s.id); return r !== undefined && !r.spare; }).map((s) => [s.id, rateOf(s)]))) : undefined) ?? Promise.resolve(new Map<string, string>()),
      // After the applies under way: a listing taken halfway through one is no drift.
      whole && this.#tableSeen !== null && net.tableState ? this.#applying.then(() => net.tableState!()) : Promise.resolve(null),
    ]);
    const drift = new Map(rates);
    // Cgroup limits changed by hand are looked for with the rest of the whole node's listings: a
    // pass for a new document reads no limit of a sliver it does not work on. The reads are
    // synchronous (cgroupfs answers from memory), about 0.2 ms a sliver: the loop takes turns
    // with other work, so that a change arriving meanwhile does not wait for the whole node
    // (≈ 400 ms at 2,000 slivers).
    const due = turnDue();
    for (const s of whole ? wanted : []) {
      if (due()) await nextTurn();
      const st = instances.get(s.id);
      // A spare being handed out runs with the pool's limits until its build writes the slice's.
      const files = st && (st.state === 'running' || st.state === 'frozen') && !this.#ledger.get(s.id)?.spare ? this.#drift(s) : [];
      if (files.length) drift.set(s.id, files.join(', '));
    }
    return { instances, roots, links, drift, tableDrift: table !== null && table !== this.#tableSeen };
  }

  /** The cgroup files of a sliver whose live values differ from its document's. */
  #drift(s: DesiredSliver): string[] {
    const driver = this.driverOf(s.id, kindOf(s));
    return driver?.limitDrift?.(limitsOf(s)).map((d) => d.file) ?? [];
  }

  /** What the planner needs to know of one sliver, read now. */
  async facts(s: DesiredSliver, opts: { done: boolean; restore?: boolean; hostDrift?: string }): Promise<SliverFacts> {
    const local = this.#images.byName(s.image.name);
    const driver = this.driverOf(s.id, kindOf(s));
    // Three independent reads, side by side; the state only when it can spare the whole build.
    const [state, stored, hasRoot] = await Promise.all([
      driver && opts.done && !opts.restore ? driver.state(s.id) : Promise.resolve(null),
      local ? this.#d.storage.hasImage(local.sha256) : Promise.resolve(false),
      this.#d.storage.hasRoot(s.id),
    ]);
    return {
      sliver: s,
      record: this.#ledger.get(s.id),
      readiness: this.readiness(kindOf(s)),
      localImage: local && { sha256: local.sha256, stored },
      canFetch: this.#fetcher !== null,
      hasRoot,
      state,
      // What the pass saw differ (rate caps), and the cgroup limits read again now.
      drift: [...(opts.hostDrift ? [opts.hostDrift] : []), ...(state === 'running' || state === 'frozen' ? this.#drift(s) : [])],
      done: opts.done,
      ...(opts.restore ? { restore: true } : {}),
    };
  }

  fetch(image: { name: string; sha256: string; magnet: string | null; webSeed: string | null }): { state: string; error: string | null; progress: number } | undefined {
    this.#fetcher?.want(image);
    return this.#fetcher?.state(image.name);
  }

  /** Where the fetch of an image is, without asking for it. */
  fetchState(name: string): { state: string; error: string | null; progress: number } | undefined {
    return this.#fetcher?.state(name);
  }

  /** Carries out a build plan; onFresh runs before the first step of a sliver with no root yet.
   * Resolves with what the sliver is when done, and the limit error it shows, if any. */
  async build(s: DesiredSliver, plan: BuildPlan, onFresh: () => void): Promise<Built> {
    this.#log.debug({ sliver: s.id, image: s.image.name, plan: describePlan(plan) }, 'ensure');
    // Keep seeding what this node holds to other nodes (also after a restart).
    if (plan.seed) this.#fetcher?.seed({ name: s.image.name, sha256: plan.sha256, magnet: s.image.magnet, webSeed: s.image.web_seed });
    const b: Build = { s, plan, driver: this.#d.instances[plan.kind]!, rec: this.#ledger.get(s.id)!, rootfs: null, idShift: 0, net: null, isNew: plan.stages[0]?.[0]?.do === 'claim', ends: 'stopped', limitsError: null, took: {} };
    const t0 = performance.now();
    await Reverter.wrap(async (r) => {
      for (const stage of plan.stages) {
        if (stage.some((st) => st.do === 'root') && plan.fresh) onFresh();
        // Every step of a stage settles before a failure undoes anything: no undo is registered late.
        await settleAll(stage.map((step) => this.#step(b, step, r)));
      }
      this.#note(s.id, 'done');
    });
    // Where a build's time goes, for a site admin whose slivers start slowly.
    if (plan.fresh || b.isNew) this.#log.info({ sliver: s.id, slice: s.slice, ms: Math.round(performance.now() - t0), steps: b.took, ...(b.rootParts ? { make_root: b.rootParts } : {}) }, 'sliver built');
    return { ends: b.ends, error: b.limitsError };
  }

  /** One debug line before each part of a build (the crash tests kill the agent on these). */
  #note(id: string, step: string): void {
    this.#log.debug({ sliver: id, step }, 'reconcile step');
  }

  async #step(b: Build, step: Step, r: Reverter): Promise<void> {
    const t0 = performance.now();
    try {
      await this.#doStep(b, step, r);
    } finally {
      b.took[step.do] = Math.round(performance.now() - t0);
    }
  }

  async #doStep(b: Build, step: Step, r: Reverter): Promise<void> {
    const { s, driver } = b;
    if (step.do !== 'link') this.#note(s.id, step.do);
    switch (step.do) {
      case 'claim':
        b.rec = this.#ledger.claim(s.id, s.slice, this.#maxSlots, b.plan.kind);
        return;
      case 'adopt':
        this.#ledger.adopt(s.id, s.slice);
        b.rec = this.#ledger.get(s.id)!;
        return;
      case 'hostname':
        return driver.setHostname?.(s.id, s.slice);
      case 'wipe':
        await driver.destroy(s.id);
        await this.#d.storage.deleteRoot(s.id);
        this.#ledger.update(s.id, { ...(step.resetSeq !== null ? { reset_seq: step.resetSeq } : {}), image_sha256: null, keys_hash: null });
        b.rec = this.#ledger.get(s.id)!;
        return;
      case 'root': {
        const t0 = performance.now();
        const parts: Record<string, number> = {};
        b.rootfs = await this.#d.storage.createRoot(s.id, b.plan.sha256, s.resources.disk_mb * MiB, { layered: this.#layered(b.plan.kind, b.rec), took: parts });
        b.rootParts = parts;
        if (b.plan.fresh) r.add(() => this.#d.storage.deleteRoot(s.id));
        // A root keeps the kind it was made with (snapshot roots of an older agent stay so).
        b.idShift = (await this.#d.storage.rootIdShift(s.id)) ?? 0;
        b.took.make_root = Math.round(performance.now() - t0);
        if (step.provision) {
          this.#note(s.id, 'provision');
          const keys = this.#keysOf(s, b.rec);
          // A full pool fails this first (btrfs snapshots take no data space): said as such.
          await provisionRoot({ rootfs: b.rootfs, slice: s.slice, keys, idShift: b.idShift }).catch((err: unknown) => {
            throw provisionFault(err, b.rootfs!);
          });
          this.#ledger.update(s.id, { image_sha256: b.plan.sha256, keys_hash: keysHash(keys) });
        }
        return;
      }
      case 'link': {
        this.#note(s.id, 'network');
        // The table's entries name the device by its name, so they need not wait for it: a spare
        // handed out (its device long made) answers on its port as soon as they are in.
        this.#note(s.id, 'nftables');
        const since = performance.now();
        const table = this.applyTable().finally(() => (b.took.table = Math.round(performance.now() - since)));
        const link = (async () => {
          b.net = await this.#d.network.attach(netSpec(b.rec, s));
          if (b.isNew) r.add(() => this.#d.network.detach(s.id));
          b.took.attach = Math.round(performance.now() - since);
          // After every attach: a device attach() made anew starts without caps. A cap at or
          // above what tc takes is no cap.
          this.#note(s.id, 'shaping');
          await this.#d.network.limit(s.id, rateOf(s));
        })();
        await settleAll([table, link]);
        return;
      }
      case 'define': {
        const net = b.net!;
        if (b.isNew) r.add(() => driver.destroy(s.id));
        await driver.define({
          ...limitsOf(s),
          hostname: s.slice,
          rootfs: b.rootfs!,
          idmapBase: driver.capabilities.unprivileged ? b.rec.idmap_base : null,
          rootfsShifted: b.idShift !== 0,
          // A container gets the veth's peer moved in; a VM opens the tap, the host end itself.
          net: { link: net.peerIf ?? net.hostIf, address: `${net.sliverAddress}/${net.prefix}`, gateway: net.gateway },
        });
        return;
      }
      case 'lifecycle': {
        // One authoritative probe; each step says what it leaves (start -d returns once running).
        const rec = this.#ledger.get(s.id)!;
        const lc = planLifecycle({ ...s, keys: this.#keysOf(s, rec) }, rec, await driver.state(s.id));
        this.#log.debug({ sliver: s.id, plan: lc.steps.map((st) => st.do).join(', ') }, 'lifecycle');
        for (const next of lc.steps) await this.#step(b, next, r);
        b.ends = lc.ends;
        return;
      }
      case 'limits': {
        // No state probe: the driver writes only into the cgroups of a running or frozen sliver
        // (a stopped one takes its config at start).
        if (!driver.applyLimits) return;
        try {
          const written = await driver.applyLimits(limitsOf(s));
          if (written.length) this.#log.info({ sliver: s.id, limits: written }, 'live limits brought to the desired ones');
        } catch (err) {
          if (!isInstanceError(err, 'limits_not_applied')) throw err;
          this.#log.warn({ sliver: s.id, err: err.message }, 'a live limit could not be applied; retried every pass');
          b.limitsError = err.message;
        }
        return;
      }
      case 'stop':
        return driver.stop(s.id, 10);
      case 'start':
        await driver.start(s.id);
        this.#onStarted(s.id);
        return;
      case 'freeze':
        return driver.freeze(s.id);
      case 'thaw':
        return driver.thaw(s.id);
      case 'restarted':
        this.#ledger.update(s.id, { restart_seq: step.seq });
        return;
      case 'keys': {
        const keys = this.#keysOf(s, this.#ledger.get(s.id)!);
        try {
          await driver.exec(s.id, keysScript(s.slice), keys.join('\n') + (keys.length ? '\n' : ''));
        } catch (err) {
          // No room for them (its disk or the pool full): it runs on with its old keys, showing
          // why, and every pass tries again (the ledger still has the old keys' hash).
          const fault = keysFault(err, s.resources.disk_mb, this.#d.storage.rootPath(s.id));
          if (!isTransient(fault)) throw fault;
          this.#log.warn({ sliver: s.id, ...errorFields(fault) }, "the sliver's new keys could not be written; retried every pass");
          b.limitsError = sliverError(fault);
          return;
        }
        this.#ledger.update(s.id, { keys_hash: keysHash(keys) });
        return;
      }
    }
  }

  /** A new LXC sliver's root is layered (its slivers share the image's page cache) when the pool
   * can make one and the container is unprivileged; a VM's root is a snapshot qemu idmaps. */
  #layered(kind: SliverKind, rec: SliverRecord): { idmapBase: number } | null {
    const driver = this.#d.instances[kind];
    return this.#d.storage.capabilities.layers && kind === 'lxc' && driver?.capabilities.unprivileged ? { idmapBase: rec.idmap_base } : null;
  }

  /** What the sliver's authorized_keys holds: the members' keys and the node's own lines. */
  #keysOf(s: DesiredSliver, rec: SliverRecord): string[] {
    return [...s.keys, ...this.#extraKeys(rec)];
  }

  /**
   * A warm-pool spare (warm-pool.ts): a container of the image built and started under an id of
   * the agent's own, with its own host key and link but no slice, no user, no keys and no port
   * (it is in no nftables rule). Undone whole if any part fails.
   */
  async buildSpare(id: string, sha256: string, resources: DesiredSliver['resources']): Promise<void> {
    const driver = this.#d.instances.lxc!;
    await Reverter.wrap(async (r) => {
      const rec = this.#ledger.claim(id, '', this.#maxSlots, 'lxc', { image_sha256: sha256 });
      r.add(() => this.#ledger.release(id));
      r.add(() => this.#d.storage.deleteRoot(id));
      let idShift = 0;
      const [rootfs, net] = await settleAll([
        this.#d.storage.createRoot(id, sha256, resources.disk_mb * MiB, { layered: this.#layered('lxc', rec) }).then(async (root) => {
          idShift = (await this.#d.storage.rootIdShift(id)) ?? 0;
          await provisionSpare(root, idShift);
          return root;
        }),
        (async () => {
          r.add(() => this.#d.network.detach(id));
          return this.#d.network.attach(netSpec(rec, { ports: NO_PORTS }));
        })(),
      ]);
      r.add(() => driver.destroy(id));
      await driver.define({
        ...limitsOf({ id, resources }),
        hostname: SPARE_HOSTNAME,
        rootfs,
        idmapBase: driver.capabilities.unprivileged ? rec.idmap_base : null,
        rootfsShifted: idShift !== 0,
        net: { link: net.peerIf ?? net.hostIf, address: `${net.sliverAddress}/${net.prefix}`, gateway: net.gateway },
      });
      await driver.start(id);
      this.#onStarted(id);
    });
  }

  /** Tears a sliver down, step by step (planner.ts: planTeardown). */
  async teardown(id: string, kind: SliverKind, steps: TeardownStep[]): Promise<void> {
    for (const step of steps) {
      this.#log.debug({ sliver: id, step }, 'teardown step');
      switch (step) {
        case 'destroy':
          await this.#d.instances[kind]!.destroy(id);
          break;
        case 'table':
          // The table is rewritten without the sliver before its ledger record goes.
          await this.applyTable();
          break;
        case 'unlink':
          await this.#d.network.detach(id);
          break;
        case 'delete root':
          await this.#d.storage.deleteRoot(id);
          break;
        case 'release':
          this.#ledger.release(id);
          break;
      }
    }
  }

  /** Stops a sliver at once (the memory watchdog). */
  async kill(id: string): Promise<void> {
    const kind = this.#ledger.get(id)?.kind ?? 'lxc';
    const ready = this.readiness(kind);
    if (ready.state !== 'ready') throw new Error(ready.why);
    await this.#d.instances[kind]!.kill(id);
  }

  /** Brings the nftables table to the ledger and the desired ports (the changes, or with `whole`
   * the whole table); one at a time. Callers that come while an apply runs share the next one:
   * it reads the ledger and the document when it starts, so it carries all their slivers (a
   * burst of builds waited in a queue of one apply each: 3 s at 1,300 slivers). Resolves once
   * applied; the listing a later pass compares with follows in the same chain. */
  applyTable(opts: { whole?: boolean } = {}): Promise<void> {
    const queued = this.#nextApply;
    if (queued) {
      queued.whole ||= opts.whole === true;
      return queued.done;
    }
    const next = { whole: opts.whole === true, done: Promise.resolve() };
    this.#nextApply = next;
    next.done = this.#applying.then(async () => {
      this.#nextApply = null;
      try {
        // Without forwarding the table lists no sliver: no port reaches one, and the forward chain
        // drops whatever a sliver's device sends (the slivers themselves keep running).
        if (!this.#forwarding()) return await this.#d.network.apply([], { whole: next.whole });
        const ports = new Map((this.#desired()?.slivers ?? []).filter((s) => s.desired !== 'deleted').map((s) => [s.id, s.ports]));
        const specs = this.#ledger
          .all()
          .filter((r) => ports.has(r.id))
          .map((r) => netSpec(r, { ports: ports.get(r.id)! }));
        await this.#d.network.apply(specs, { whole: next.whole });
      } finally {
        if (next.whole || this.#tableSeen === null) this.#tableSeen = (await this.#d.network.tableState?.().catch(() => null)) ?? null;
      }
    });
    this.#applying = next.done.catch(() => undefined);
    return next.done;
  }
}

/** Waits for every promise, then throws the first failure (nothing is left running behind an
 * undo); resolves with their values. */
async function settleAll<T extends readonly unknown[]>(work: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const outcomes = await Promise.allSettled(work);
  const failed = outcomes.find((o) => o.status === 'rejected');
  if (failed) throw failed.reason;
  return outcomes.map((o) => (o as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

/** Processes a sliver may have at once. */
const PIDS_MAX = 4096;

/** A sliver's resource limits as its instance driver takes them. */
export function limitsOf(s: Pick<DesiredSliver, 'id' | 'resources'>): InstanceLimits {
  return { id: s.id, memoryMb: s.resources.memory_mb, cpuShares: s.resources.cpu_shares, cpuCapPercent: s.resources.cpu_cap_percent ?? null, pids: PIDS_MAX };
}

/** A sliver's rate caps; a cap at or above what tc takes is no cap. */
function rateOf(s: Pick<DesiredSliver, 'resources'>): SliverRate {
  const kbps = s.resources.net_kbps <= MAX_KBPS ? s.resources.net_kbps : null;
  return { inKbps: kbps, outKbps: kbps };
}

function netSpec(rec: SliverRecord, s: Pick<DesiredSliver, 'ports'>): SliverNetSpec {
  return { id: rec.id, slot: rec.slot, ports: s.ports, kind: rec.kind === 'kvm' ? 'tap' : 'veth' };
}
