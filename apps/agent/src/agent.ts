// The node agent daemon: desired-state sync in, reconcile against the host, observed state out.
// Each module has start/stop, stopped in reverse order.
import { machine } from 'node:os';
import { existsSync } from 'node:fs';
import { errorFields, FORKER_PYTHON, useForker } from '@planetlite/host';
import { consoleTail, type PlanetLiteClient, type DesiredState, type ObservedSliver, type ObservedState, type WatchdogHold } from '@planetlite/api';
import { jsonEqual, type Logger } from '@planetlite/core';
import { open, stat } from 'node:fs/promises';
import { StateDir } from './state.js';
import { OomWatch } from './oom.js';
import { NodeImages } from './images/index.js';
import { checkInBackground, nodeCapabilities } from './instances.js';
import { DesiredStateSync } from './sync.js';
import { Reconciler } from './reconcile.js';
import { Ledger } from './ledger.js';
import { loadSettings, type SettingsOverrides } from './settings.js';
import { EventOutbox } from './outbox.js';
import { Watchdog } from './watchdog.js';
import { openDrivers, type Drivers } from './drivers.js';
import { hostSubidFiles, sliverIdRange } from './subids.js';
import { parseSubnet, slotCount } from '@planetlite/network';
import { registryClient } from './registry-client.js';
import { FrontDoor } from './frontdoor/door.js';

/** How much of a VM's serial console the registry keeps (its last bytes). */
const CONSOLE_TAIL_BYTES = 64 * 1024 - 1024;

export interface AgentOptions {
  stateDir: string;
  log: Logger;
  /** Flags given to `run`; remembered in the state dir. */
  settings?: SettingsOverrides;
  /** Drivers to use instead of opening them from the settings; null: follow the desired state
   * and report, but build no sliver (tests of the sync alone). */
  drivers?: Drivers | null;
  /** Long-poll length, seconds (tests shorten it). */
  waitSeconds?: number;
  /** How often observed state is sent even when nothing changed, ms (default 30 s). */
  reportEveryMs?: number;
  /** While a sliver shows a live limit not applied, a pass runs this often (default 10 s). */
  limitsRetryMs?: number;
}

export class Agent {
  readonly state: StateDir;
  readonly sync: DesiredStateSync;
  readonly client: PlanetLiteClient;
  readonly nodeId: string;
  readonly #opts: AgentOptions;
  readonly #address: string;
  readonly #log: Logger;
  readonly #reportEveryMs: number;
  #reconciler: Reconciler | null = null;
  #watchdog: Watchdog | null = null;
  /** Tells of processes the kernel killed at a sliver's memory limit (checked with each report). */
  #oom: OomWatch | null = null;
  /** Images: fetch, verify, import, index, seed, collect. */
  #images: NodeImages | null = null;
  #collecting: Promise<void> = Promise.resolve();
  #drivers: Drivers | null = null;
  /** The background checks of drivers that take long (the VM driver's probe boot). */
  #checks: Promise<void> = Promise.resolve();
  /** Size and mtime of each console log as last uploaded, so an unchanged one costs a stat. */
  readonly #consoles = new Map<string, string>();
  /** Each sliver as the registry last took its report, for partial reports; null before
   * the first whole report. */
  #sent: Map<string, ObservedSliver> | null = null;
  /** Events for the registry (watchdog), kept in the state dir until sent. */
  readonly outbox: EventOutbox;
  #timer: NodeJS.Timeout | null = null;
  #gcTimer: NodeJS.Timeout | null = null;
  #limitsTimer: NodeJS.Timeout | null = null;
  #reporting: Promise<void> = Promise.resolve();
  /** The report waiting for the one under way, which later asks join: it reads the node when its
   * turn comes, so a slow registry finds one report per node waiting, not one per tick. */
  #nextReport: { fresh: boolean; done: Promise<void> } | null = null;
  readonly #registryCa: string | null;
  #passes: Promise<void> = Promise.resolve();
  #frontDoor: FrontDoor | null = null;
  #ledger: Ledger | null = null;

  constructor(opts: AgentOptions) {
    this.#opts = opts;
    this.state = new StateDir(opts.stateDir);
    const e = this.state.readEnrollment();
    this.nodeId = e.node_id;
    this.#address = e.address;
    this.#log = opts.log;
    this.#reportEveryMs = opts.reportEveryMs ?? 30_000;
    // The CA pinned at enrollment is the only one trusted for the registry (API, tracker, web seed).
    this.#registryCa = this.state.trustPinnedRegistry(e);
    this.client = registryClient(e.registry, e.node_key);
    this.sync = new DesiredStateSync({
      client: this.client,
      nodeId: e.node_id,
      state: this.state,
      log: opts.log.child({ component: 'sync' }),
      onDesired: (doc) => this.#apply(doc),
      onRevoked: () => this.#revoked(),
      ...(opts.waitSeconds !== undefined ? { waitSeconds: opts.waitSeconds } : {}),
    });
    this.outbox = new EventOutbox({ stateDir: opts.stateDir, client: this.client, nodeId: e.node_id, log: opts.log.child({ component: 'events' }) });
  }

  get watchdog(): Watchdog | null {
    return this.#watchdog;
  }

  /** The ssh front door (null without drivers). */
  get frontDoor(): FrontDoor | null {
    return this.#frontDoor;
  }

  get reconciler(): Reconciler | null {
    return this.#reconciler;
  }

  async start(): Promise<void> {
    // Host commands from here on start through the forker, not Node's spawn, which blocks the
    // event loop for each fork (packages/host/src/forker.ts). It stays on for the process.
    if (process.env.PLANETLITE_SPAWN !== 'node') {
      if (existsSync(FORKER_PYTHON)) useForker();
      else this.#log.warn({ python: FORKER_PYTHON }, "python3 is not installed: host commands start through Node's spawn, which is slower (apt-get install python3)");
    }
    if (this.#opts.drivers !== null) {
      const settings = loadSettings(this.state.dir, this.#opts.settings);
      const dir = this.state.dir;
      const ledger = new Ledger(dir);
      this.#ledger = ledger;
      const frontDoor = new FrontDoor({
        stateDir: dir,
        address: this.#address,
        port: settings.front_door_port,
        netns: settings.netns,
        sliverSubnet: settings.sliver_subnet,
        log: this.#log.child({ component: 'front-door' }),
        emit: (ev) => this.outbox.push(ev),
      });
      this.#frontDoor = frontDoor;
      // Before any pass: every sliver's authorized_keys carries the front door's line.
      await frontDoor.prepare();
      // On real drivers: slivers' host ids, inside root's /etc/subuid ranges when it has some.
      const ids = this.#opts.drivers ? null : sliverIdRange(hostSubidFiles(), slotCount(parseSubnet(settings.sliver_subnet)), ledger.all());
      if (ids) ledger.useIdRange(ids);
      const drivers = this.#opts.drivers ?? (await openDrivers(settings, this.#address, dir, ids?.probe, this.#log));
      this.#drivers = drivers;
      const images = new NodeImages({
        stateDir: dir,
        storage: drivers.storage,
        log: this.#log.child({ component: 'images' }),
        uploadKbps: settings.image_upload_kbps,
        registryCa: this.#registryCa,
        inUse: () => this.#reconciler?.imagesInUse() ?? null,
        graceMs: settings.image_gc_grace_seconds * 1000,
        onChange: (_image, state, detail) => {
          if (state === 'ready') this.outbox.push({ type: 'image.fetched', data: detail });
          // Slivers waiting for the image go on (or show the fetch's error).
          this.#again();
        },
      });
      this.#images = images;
      this.#reconciler = new Reconciler({
        drivers,
        ledger,
        images: images.index,
        log: this.#log.child({ component: 'reconcile' }),
        maxSlots: slotCount(parseSubnet(settings.sliver_subnet)),
        fetcher: images,
        forwarding: () => this.state.revokedAt() === null,
        extraKeys: (rec) => frontDoor.authorizedLines(rec),
        warmPool: { image: settings.warm_pool_image, size: settings.warm_pool_size },
      });
      if (this.#reconciler.pool) this.#reconciler.pool.onChange = () => void this.report({ fresh: false });
      const revokedAt = this.state.revokedAt();
      if (revokedAt) this.#log.error({ revoked_at: revokedAt }, "this node's key was revoked: its slivers get no forwarding until the node is enrolled again");
      const reconciler = this.#reconciler;
      // Checked every minute, or more often when the grace period is shorter.
      this.#gcTimer = setInterval(() => void this.collectImages(), Math.max(1000, Math.min(60_000, settings.image_gc_grace_seconds * 500)));
      this.#gcTimer.unref();
      this.#watchdog = new Watchdog({
        settings: settings.watchdog,
        slivers: () => reconciler.slivers(),
        memoryOf: (id) => reconciler.memoryOf(id),
        reset: async (id) => ({ action: await reconciler.memoryReset(id) }),
        emit: (ev) => this.outbox.push(ev),
        log: this.#log.child({ component: 'watchdog' }),
        pressure: {
          slivers: () => reconciler.pressureCandidates(),
          // Reported at once: the registry shows the hold while it lasts.
          freeze: async (id, f) => {
            await reconciler.watchdogFreeze(id, holdOf(f));
            void this.report({ fresh: false });
          },
          thaw: async (id) => {
            await reconciler.watchdogThaw(id);
            void this.report({ fresh: false });
          },
        },
      });
      this.#oom = new OomWatch({
        slivers: () => reconciler.instances(),
        driverOf: (id) => reconciler.driverOf(id),
        limitMb: (id) => this.sync.current?.slivers.find((s) => s.id === id)?.resources.memory_mb ?? null,
        emit: (ev) => this.outbox.push(ev),
        log: this.#log.child({ component: 'oom' }),
      });
      reconciler.onHoldReleased = (id, thawed) => this.#watchdog?.pressure?.policy.release(id, thawed);
      reconciler.onStarted = (id) => this.#oom?.started(id);
      // When the VM driver's check is over, VM slivers go on (or fail) and the node's capabilities change.
      this.#checks = checkInBackground(drivers.instances, this.#log.child({ component: 'instances' }), () => {
        this.#again();
        void this.report({ fresh: false });
      });
    }
    await this.#frontDoor?.start();
    await this.sync.start();
    this.#watchdog?.start();
    void this.outbox.flush();
    this.#timer = setInterval(() => void this.report(), this.#reportEveryMs);
    // A limit the kernel refused (memory below what the sliver holds), or a build that failed for
    // want of space (the pool or the sliver's disk full), is tried again until it holds.
    this.#limitsTimer = setInterval(() => {
      if (this.#reconciler?.retriesPending()) this.#again();
    }, this.#opts.limitsRetryMs ?? 10_000);
    this.#limitsTimer.unref();
    await this.report();
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    if (this.#gcTimer) clearInterval(this.#gcTimer);
    if (this.#limitsTimer) clearInterval(this.#limitsTimer);
    await this.#collecting;
    await this.#checks;
    await this.#watchdog?.stop();
    await this.sync.stop();
    await this.#passes;
    // A spare being built is finished (or undone); no other is started.
    await this.#reconciler?.close();
    this.#ledger?.flush();
    await this.#reporting;
    await this.#images?.close();
    await this.#frontDoor?.stop();
    await this.outbox.close();
  }

  /** One round of image garbage collection, after the passes under way (they may need an image). */
  collectImages(): Promise<string[]> {
    const images = this.#images;
    if (!images) return Promise.resolve([]);
    const round = this.#collecting.then(async () => {
      await this.#passes;
      try {
        return await images.collect();
      } catch (err) {
        this.#log.warn(errorFields(err), 'image garbage collection failed; retried later');
        return [];
      }
    });
    this.#collecting = round.then(() => undefined);
    return round;
  }

  /** What this node actually has; nothing is claimed that is not there. fresh: false takes each
   * sliver's figures (memory, cpu, bytes) as the last fresh report read them. */
  async observed(opts: { fresh?: boolean } = {}): Promise<ObservedState> {
    return {
      slivers: this.#reconciler ? await this.#reconciler.observed(opts) : [],
      ...(this.#images ? { images: this.#images.report() } : {}),
      // What the drivers' checks found: nothing is claimed before they pass.
      ...(this.#drivers ? { capabilities: nodeCapabilities(this.#drivers.instances, machine()) } : {}),
      ...(this.#frontDoor ? { front_door: this.#frontDoor.published() } : {}),
      ...(this.#reconciler?.pool ? { spares: this.#reconciler.pool.spares() } : {}),
    };
  }

  /**
   * Sends observed state; failures are logged and retried on the next tick. The reports on the
   * clock read every sliver's state, figures and OOM count and list them all; the ones a change
   * sends at once (fresh: false) read only what this agent has not seen yet and list only the
   * slivers whose report changed, so one change costs neither a read of the whole node's cgroups
   * nor a write of all its slivers at the registry.
   */
  report(opts: { fresh?: boolean } = {}): Promise<void> {
    if (this.#nextReport) {
      this.#nextReport.fresh ||= opts.fresh ?? true;
      return this.#nextReport.done;
    }
    const next = { fresh: opts.fresh ?? true, done: Promise.resolve() };
    this.#nextReport = next;
    next.done = this.#reporting.then(async () => {
      this.#nextReport = null;
      const { fresh } = next;
      try {
        if (fresh) await this.#oom?.check();
        const whole = await this.observed({ fresh });
        // A change's report lists only the slivers whose report changed since the last one the
        // registry took (partial); the clock's reports list them all.
        const changed = fresh || !this.#sent ? null : whole.slivers.filter((s) => !jsonEqual(this.#sent!.get(s.id), s));
        await this.client.putObservedState(this.nodeId, changed ? { ...whole, slivers: changed, partial: true } : whole);
        if (!changed) this.#sent = new Map();
        for (const s of changed ?? whole.slivers) this.#sent!.set(s.id, s);
        await this.#uploadConsoles();
      } catch (err) {
        this.#log.debug(errorFields(err), 'observed-state report failed');
      }
    });
    this.#reporting = next.done;
    return next.done;
  }

  /** The tail of each VM sliver's serial console, for `planetlite sliver log`, when it changed. */
  async #uploadConsoles(): Promise<void> {
    const reconciler = this.#reconciler;
    if (!reconciler) return;
    const live = new Set<string>();
    for (const { id } of reconciler.slivers()) {
      const file = reconciler.driverOf(id)?.consoleLog?.(id);
      if (!file) continue;
      live.add(id);
      const st = await stat(file).catch(() => null);
      if (!st) continue;
      const mark = `${st.size}:${st.mtimeMs}`;
      if (this.#consoles.get(id) === mark) continue;
      try {
        const fd = await open(file, 'r');
        try {
          const n = Math.min(st.size, CONSOLE_TAIL_BYTES);
          const buf = Buffer.alloc(n);
          await fd.read(buf, 0, n, st.size - n);
          // Invalid UTF-8 grows as it is decoded: cut again to what the registry takes.
          await this.client.putSliverConsole(this.nodeId, id, consoleTail(buf.toString('utf8')));
          this.#consoles.set(id, mark);
        } finally {
          await fd.close();
        }
      } catch (err) {
        this.#log.debug({ sliver: id, ...errorFields(err) }, 'console upload failed; retried with the next report');
      }
    }
    for (const id of this.#consoles.keys()) if (!live.has(id)) this.#consoles.delete(id);
  }

  /** Each new document starts a pass; the sync loop does not wait for slow slivers. */
  /**
   * The registry revoked this node's key (decommissioned, or cut off by its site): the node stops
   * forwarding to and from its slivers at once, remembers it across restarts, and leaves the
   * slivers themselves as they are until it is enrolled again.
   */
  async #revoked(): Promise<void> {
    this.state.markRevoked();
    this.#log.error("the registry revoked this node's key: stopping every sliver's forwarding until the node is enrolled again");
    await this.#reconciler?.refreshForwarding().catch((err: unknown) => this.#log.error(errorFields(err), 'stopping the forwarding failed'));
  }

  async #apply(doc: DesiredState): Promise<void> {
    this.#log.info({ slivers: Array.isArray(doc.slivers) ? doc.slivers.length : null }, 'desired state received');
    // New keys let users in at once; new slivers once the pass has given them a slot.
    this.#updateFrontDoor();
    const pass = (async () => {
      // The report acknowledges the document; the pass does not wait for it.
      const ack = this.report({ fresh: false });
      if (this.#reconciler) {
        try {
          await this.#reconciler.reconcile(doc);
        } catch (err) {
          this.#log.error({ err }, 'reconcile pass failed; the next change or scheduled pull retries');
        }
        this.#updateFrontDoor();
        await this.report({ fresh: false });
        // The once-a-minute look at the whole node (what changed by hand, crashed, drifted) runs
        // after the change, not before it.
        if (this.#reconciler.wholeDue()) this.#again();
      }
      await ack;
    })();
    this.#passes = Promise.all([this.#passes, pass]).then(() => undefined, () => undefined);
  }

  /** Runs the last document again, like a new one. */
  #again(): void {
    const reconciler = this.#reconciler;
    if (!reconciler) return;
    const pass = reconciler
      .again()
      .catch((err: unknown) => this.#log.error({ err }, 'reconcile pass failed'))
      .then(() => {
        this.#updateFrontDoor();
        return this.report({ fresh: false });
      });
    this.#passes = Promise.all([this.#passes, pass]).then(() => undefined, () => undefined);
  }

  #updateFrontDoor(): void {
    if (this.#ledger) this.#frontDoor?.update(this.sync.current, this.#ledger.slivers());
  }

  /** Resolves when every pass started so far has finished (tests). */
  async settled(): Promise<void> {
    await this.#passes;
  }
}

/** What the registry shows of a watchdog freeze, from the sliver.frozen event's figures. */
function holdOf(f: Record<string, unknown>): WatchdogHold {
  const n = (k: string) => (typeof f[k] === 'number' ? (f[k] as number) : 0);
  return {
    frozen_at: String(f.frozen_at),
    reason: String(f.reason).slice(0, 1000),
    node_psi_some_avg10: n('node_psi_some_avg10'),
    sliver_psi_some_avg10: n('sliver_psi_some_avg10'),
    thaw_psi_some: n('thaw_psi_some'),
    freeze_timeout_seconds: n('freeze_timeout_seconds'),
  };
}
