// The LXC instance driver: a sliver is a container `sl-<uuid>` in the driver's own lxcpath,
// driven through the lxc-* tools (inside the node's network namespace when one is given).
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { CommandError, Reverter, requireTools, run, tryRun, nextTurn, turnDue, type RunOptions, type RunResult } from '@planetlite/host';
import { InstanceError } from '../errors.js';
import {
  InvalidSpecError,
  isHostname,
  isSliverId,
  trackCheck,
  validateInstanceSpec,
  type InstanceCapabilities,
  type InstanceDriver,
  type InstanceLimits,
  type LimitDrift,
  type InstanceDriverStatus,
  type InstanceSpec,
  type InstanceState,
} from '../driver.js';
import { cpuSecondsOf, detectCgroupLayout, findPayload, missingLimits, type CgroupVersion, parseMemoryStat, parsePressure, payloadProbe, pidIn, readCgroupFile, removeContainerCgroups, residentBytes, type PayloadProbe, type Psi } from './cgroup.js';
import { containerName, idFromContainerName, renderConfig, resourceLimits, type LxcHostFacts, type ResourceLimit } from './config.js';
import { apparmorEnabled, findStaticBusybox, firstUnsearchable, LXC_TOOLS, seccompProfile, userNamespaceProblem, type LxcTool } from './probe.js';
import { installSeccompPolicy } from './seccomp.js';
import { listensOn } from './listen.js';

export interface LxcDriverOptions {
  /** The driver's own lxcpath (never the system's /var/lib/lxc); one per node. */
  lxcPath: string;
  /** Run every lxc command inside the network namespace NETNS (`ip netns add NETNS`), as
   * `nsenter --net=/run/netns/NETNS lxc-… -P LXCPATH …`: a node namespace in multi-node tests.
   * Not `ip netns exec`: that also remounts /sys, hiding /sys/fs/cgroup from LXC, which then
   * cannot place the sliver in cgroups or apply its limits. */
  netns?: string;
  /** Directory on the filesystem that will hold sliver root filesystems (the btrfs pool); check()
   * proves idmapped mounts work there. Default: lxcPath. */
  rootfsDir?: string;
  /** Host id base of the idmap probe container (default: the top of the 32-bit range); inside
   * root's /etc/subuid range when LXC maps ids through newuidmap. */
  probeIdmapBase?: number;
}

/** Host uid/gid base of the short-lived idmap probe container (top of the 32-bit range). */
const PROBE_IDMAP_BASE = 0xfffe0000;
const PROBE_DIR_PREFIX = '.idmap-probe-';
/** How long a freeze may take before it is undone (lxc-freeze itself never gives up). */
const FREEZE_TIMEOUT_MS = 20_000;
/** Inside a sliver, lxc-attach --clear-env leaves no PATH. */
const MiB = 1024 * 1024;
const EXEC_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class LxcDriver implements InstanceDriver {
  readonly name = 'lxc';
  readonly lxcPath: string;
  readonly netns: string | undefined;
  readonly rootfsDir: string;
  readonly #probeIdmapBase: number;
  #facts: LxcHostFacts | null = null;
  #probe: PayloadProbe | null = null;
  #capabilities: InstanceCapabilities = { unprivileged: false, freeze: false, memoryLimit: false };
  #limitations: string[] = [];
  #status: InstanceDriverStatus = { state: 'unchecked' };

  constructor(opts: LxcDriverOptions) {
    for (const [key, dir] of [['lxcPath', opts.lxcPath], ['rootfsDir', opts.rootfsDir]] as const)
      if (dir !== undefined && (!isAbsolute(dir) || /[\n\r\0]/.test(dir))) throw new InstanceError('invalid_options', `lxc driver: ${key} must be an absolute path, got ${JSON.stringify(dir)}`);
    if (opts.lxcPath.replace(/\/+$/, '') === '/var/lib/lxc') throw new InstanceError('invalid_options', 'lxc driver: use an lxcpath of its own, not the system default /var/lib/lxc');
    if (opts.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(opts.netns)) throw new InstanceError('invalid_options', `lxc driver: bad netns name ${JSON.stringify(opts.netns)}`);
    this.lxcPath = opts.lxcPath;
    this.netns = opts.netns;
    this.rootfsDir = opts.rootfsDir ?? opts.lxcPath;
    this.#probeIdmapBase = opts.probeIdmapBase ?? PROBE_IDMAP_BASE;
  }

  get capabilities(): InstanceCapabilities {
    return { ...this.#capabilities };
  }

  /** What check() found missing, in words (empty when every capability is there). */
  get limitations(): readonly string[] {
    return [...this.#limitations];
  }

  /** The host facts check() found; they shape every config. */
  get hostFacts(): LxcHostFacts {
    if (!this.#facts) throw new InstanceError('not_checked', 'lxc driver: call check() before using the driver');
    return this.#facts;
  }

  get status(): InstanceDriverStatus {
    return this.#status;
  }

  /** Checks tools, the namespace, cgroups and seccomp, and proves idmapped roots work here with a
   * short-lived probe container; status says how far it got. */
  check(): Promise<void> {
    return trackCheck((s) => (this.#status = s), () => this.#check());
  }

  async #check(): Promise<void> {
    await requireTools([...LXC_TOOLS, ...(this.netns !== undefined ? ['nsenter'] : [])], 'the lxc driver', (m) => new InstanceError('missing_tool', m));
    if (this.netns !== undefined && (await tryRun('nsenter', [`--net=${this.#netnsPath()}`, 'true'])) === null)
      throw new InstanceError('missing_kernel_feature', `lxc driver: network namespace ${this.netns} does not exist (ip netns add ${this.netns})`);
    const cgroups = await detectCgroupLayout();
    const missing = missingLimits(cgroups);
    if (missing.length) {
      const hidden = missing.length === 3 ? ': no cgroup hierarchy is visible to this process (started under `ip netns exec`, which remounts /sys? run the agent with --netns NAME instead)' : ` (no ${missing.join(', ')} controller in /proc/self/mounts or the v2 cgroup.controllers)`;
      throw new InstanceError('missing_limits', `lxc driver: refusing to run slivers without their ${missing.join(', ')} limits${hidden}`);
    }
    this.#facts = { cgroups, seccompProfile: await seccompProfile(this.lxcPath), apparmor: await apparmorEnabled() };
    this.#probe = await payloadProbe(cgroups);
    const limitations: string[] = [];
    if (!cgroups.memory) limitations.push('memoryLimit: no memory cgroup controller (v1 mount or v2 cgroup.controllers)');
    if (!cgroups.freezer) limitations.push('freeze: no freezer (v1 freezer controller, or a unified v2 hierarchy)');
    if (!this.#facts.seccompProfile) limitations.push('seccomp: kernel without seccomp; slivers run without a syscall filter and can escape their disk quota with btrfs subvolumes');
    await mkdir(this.lxcPath, { recursive: true });
    if (this.#facts.seccompProfile) await installSeccompPolicy(this.#facts.seccompProfile);
    await mkdir(this.rootfsDir, { recursive: true });
    await this.#removeStaleProbes();
    const kernelProblem = await userNamespaceProblem();
    if (kernelProblem === null) {
      // Fixable, and a quiet fallback to privileged slivers would be worse: refuse.
      const closed = await firstUnsearchable(this.lxcPath);
      if (closed) throw new InstanceError('unsupported', `lxc driver: unprivileged slivers cannot reach lxcpath ${this.lxcPath}: ${closed} is not searchable by others (chmod o+x ${closed})`);
    }
    const usernsProblem = kernelProblem ?? (await this.#probeIdmappedRootfs());
    if (usernsProblem) limitations.push(`unprivileged: ${usernsProblem}`);
    this.#limitations = limitations;
    this.#capabilities = { unprivileged: usernsProblem === null, freeze: cgroups.freezer !== null, memoryLimit: cgroups.memory !== null };
  }

  async define(spec: InstanceSpec): Promise<void> {
    validateInstanceSpec(spec);
    const facts = this.hostFacts;
    if (spec.idmapBase === null && this.#capabilities.unprivileged)
      throw new InvalidSpecError(`instance spec idmapBase is null (privileged) but this host runs slivers unprivileged`);
    if (spec.idmapBase !== null && !this.#capabilities.unprivileged)
      throw new InstanceError('unsupported', `lxc driver: this host cannot run unprivileged slivers (${this.#limitations.join('; ')}); define with idmapBase null`);
    const root = await stat(spec.rootfs).catch(() => null);
    if (!root?.isDirectory()) throw new InstanceError('rootfs_missing', `lxc driver: rootfs ${spec.rootfs} of sliver ${spec.id} is not a directory (make the snapshot first)`);
    const config = renderConfig(spec, facts, { lxcPath: this.lxcPath });
    const dir = this.#dir(spec.id);
    const path = join(dir, 'config');
    const previous = await readFile(path, 'utf8').catch(() => null);
    if (previous === config) return;
    await Reverter.wrap(async (r) => {
      const madeDir = await mkdir(dir, { recursive: true });
      if (madeDir) r.add(() => rm(dir, { recursive: true, force: true }));
      // Write then rename: a crash never leaves a half-written config that LXC would half-apply.
      const tmp = `${path}.tmp-${process.pid}`;
      r.add(() => rm(tmp, { force: true }));
      await writeFile(tmp, config, { mode: 0o600 });
      await rename(tmp, path);
    });
    // A running sliver's live limits are not touched here: applyLimits() compares them with the
    // spec on every pass, so a kill right after this write, or a limit the kernel refused, is
    // caught up with later rather than forgotten behind an unchanged config file.
  }

  limitDrift(limits: InstanceLimits): LimitDrift[] {
    return this.#live(limits).filter((l) => l.have !== l.want).map(({ file, want, have }) => ({ file, want, have }));
  }

  async applyLimits(limits: InstanceLimits): Promise<string[]> {
    const written: string[] = [];
    const refused: string[] = [];
    for (const l of this.#live(limits)) {
      if (l.have === l.want) continue;
      try {
        await writeFile(join(l.dir, l.file), l.want);
        written.push(l.file);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : String(err));
        refused.push(l.controller === 'memory' ? `memory limit ${Number(l.want) / MiB} MiB not applied, the sliver holds ${this.#memoryUsageMiB(l.dir, l.version)} MiB (${code})` : `${l.file} ${l.want} not applied (${code})`);
      }
    }
    if (refused.length) throw new InstanceError('limits_not_applied', `lxc driver: sliver ${limits.id}: ${refused.join('; ')}; it keeps its old value until a pass can apply it`);
    return written;
  }

  /** Each limit of the spec with the sliver's cgroup directory that holds it and its live value;
   * only the limits of a running (or frozen) sliver, whose cgroups exist. */
  #live(limits: InstanceLimits): Array<ResourceLimit & { dir: string; version: CgroupVersion; want: string; have: string | null }> {
    const probe = this.#probe;
    if (!probe) return [];
    const name = this.#name(limits.id);
    const out: Array<ResourceLimit & { dir: string; version: CgroupVersion; want: string; have: string | null }> = [];
    for (const l of resourceLimits(limits, this.hostFacts.cgroups)) {
      const where = probe.limits[l.controller];
      const dir = where ? findPayload(name, where.parents) : null;
      if (!dir || !where) continue;
      out.push({ ...l, dir, version: where.version, want: l.value, have: readCgroupFile(dir, l.file)?.trim() ?? null });
    }
    return out;
  }

  #memoryUsageMiB(dir: string, version: CgroupVersion): number {
    return Math.round(Number(readCgroupFile(dir, version === 'v1' ? 'memory.usage_in_bytes' : 'memory.current') ?? 0) / MiB);
  }

  async start(id: string): Promise<void> {
    const state = await this.state(id);
    if (state === 'absent') throw new InstanceError('not_defined', `lxc driver: sliver ${id} is not defined`);
    if (state !== 'stopped') return;
    try {
      // -d returns once the container is RUNNING (or has failed).
      await this.#lxc('lxc-start', id, ['-d']);
    } catch (err) {
      const why = await this.#logErrors(id);
      throw new InstanceError('start_failed', `lxc driver: sliver ${id} failed to start: ${err instanceof Error ? err.message : String(err)}${why ? `\n${why}` : ''}`, { cause: err });
    }
  }

  async stop(id: string, timeoutS = 10): Promise<void> {
    const state = await this.state(id);
    if (state === 'absent' || state === 'stopped') return;
    // A frozen init cannot receive the halt signal.
    if (state === 'frozen') await this.#lxc('lxc-unfreeze', id, []);
    // Clean halt (lxc.signal.halt, SIGPWR), killed after timeoutS.
    await this.#lxc('lxc-stop', id, ['-t', String(timeoutS)], { timeoutMs: (timeoutS + 30) * 1000 });
  }

  async kill(id: string): Promise<void> {
    const state = await this.state(id);
    if (state === 'absent' || state === 'stopped') return;
    // SIGKILL stays pending on frozen tasks: thaw first so the memory is freed now.
    if (state === 'frozen') await this.#lxc('lxc-unfreeze', id, []);
    await this.#lxc('lxc-stop', id, ['-k']);
  }

  async freeze(id: string): Promise<void> {
    if (!this.#capabilities.freeze) throw new InstanceError('unsupported', `lxc driver: cannot freeze here (${this.#limitations.join('; ')})`);
    const state = await this.state(id);
    if (state === 'frozen') return;
    if (state !== 'running') throw new InstanceError('wrong_state', `lxc driver: sliver ${id} is ${state}, not running`);
    // lxc-freeze waits, without a bound, until every task is frozen; a v1 freezer can stay in
    // FREEZING (once in the suite, a freeze right after a start held a test for a minute). Bounded
    // here, and a freeze that does not finish is undone: the sliver keeps running.
    try {
      await this.#lxc('lxc-freeze', id, [], { timeoutMs: FREEZE_TIMEOUT_MS });
    } catch (err) {
      await tryRun(...this.#argv('lxc-unfreeze', id, []));
      throw new InstanceError('host_broken', `lxc driver: sliver ${id} did not freeze: ${err instanceof Error ? err.message : String(err)}; it was thawed and keeps running`, { cause: err });
    }
  }

  async thaw(id: string): Promise<void> {
    const state = await this.state(id);
    if (state === 'running') return;
    if (state !== 'frozen') throw new InstanceError('wrong_state', `lxc driver: sliver ${id} is ${state}, not frozen`);
    await this.#lxc('lxc-unfreeze', id, []);
  }

  async state(id: string): Promise<InstanceState> {
    const dir = this.#dir(id);
    if (!(await stat(join(dir, 'config')).catch(() => null))) return 'absent';
    // From cgroupfs, as states() reads every sliver each pass: no lxc-info process (two of them,
    // the lifecycle's probe and start's, were a tenth of a new sliver's start-up).
    const probe = this.#probe;
    if (probe?.populated) return this.#cgroupState(containerName(id), probe);
    const { stdout } = await this.#lxc('lxc-info', id, ['-s', '-H']);
    switch (stdout.trim()) {
      case 'FROZEN':
        return 'frozen';
      case 'RUNNING':
      case 'STARTING':
      case 'THAWED':
      case 'FREEZING':
        return 'running';
      default: // STOPPED, STOPPING, ABORTING
        return 'stopped';
    }
  }

  async exec(id: string, argv: string[], input?: string): Promise<RunResult> {
    if (!argv.length) throw new InstanceError('invalid_spec', 'lxc driver: exec needs a command');
    // --clear-env: nothing of the agent's environment leaks into the sliver.
    return this.#lxc('lxc-attach', id, ['--clear-env', '-v', EXEC_PATH, '--', ...argv], input === undefined ? {} : { input });
  }

  async destroy(id: string): Promise<void> {
    const dir = this.#dir(id);
    if (!(await stat(dir).catch(() => null))) return;
    const state = await this.state(id);
    if (state === 'frozen') await tryRun(...this.#argv('lxc-unfreeze', id, []));
    // The sliver is going away: kill, no clean shutdown. lxc-stop -k waits until it is STOPPED,
    // by which time LXC has handed a phys interface back to the namespace it came from.
    if (state === 'running' || state === 'frozen') await this.#lxc('lxc-stop', id, ['-k']);
    await removeContainerCgroups(containerName(id));
    await this.#removeDir(id);
  }

  /**
   * Removes a container's directory. Every LXC tool that loads a config (lxc-ls, lxc-info, an
   * admin's or a monitor's) opens the log file it names at once, and makes that file and its
   * directory if they are gone: the config goes first, so that no tool loads it any more, and the
   * removal starts over when a log appears in the directory meanwhile (ENOTEMPTY). A directory a
   * slower tool makes again holds no config: the next whole pass sees it as absent and removes it.
   */
  async #removeDir(id: string): Promise<void> {
    const dir = this.#dir(id);
    await rm(join(dir, 'config'), { force: true });
    await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 20 });
  }

  async list(): Promise<string[]> {
    const names = await readdir(this.lxcPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    return names
      .map(idFromContainerName)
      .filter((id): id is string => id !== null)
      .sort();
  }

  /**
   * Every defined sliver's state from cgroupfs, in one pass without a process per sliver: a
   * payload cgroup with processes is running (or frozen); none, or an empty one, is stopped.
   * Falls back to lxc-info per sliver where the host's cgroups cannot answer.
   */
  async states(): Promise<Map<string, InstanceState>> {
    const out = new Map<string, InstanceState>();
    const probe = this.#probe;
    // Synchronous reads of cgroupfs: other work gets a turn now and then (2,000 slivers ≈ 100 ms).
    const due = turnDue();
    for (const id of await this.list()) {
      if (due()) await nextTurn();
      if (!probe?.populated) out.set(id, await this.state(id));
      else if (!existsSync(join(this.#dir(id), 'config'))) out.set(id, 'absent');
      else out.set(id, this.#cgroupState(containerName(id), probe));
    }
    return out;
  }

  #cgroupState(name: string, probe: PayloadProbe): InstanceState {
    const { populated, frozen } = probe;
    if (!populated) return 'stopped';
    const dir = findPayload(name, populated.parents);
    if (!dir) return 'stopped';
    if (populated.version === 'v2') {
      const events = readCgroupFile(dir, 'cgroup.events') ?? '';
      if (!/^populated 1$/m.test(events)) return 'stopped';
      return /^frozen 1$/m.test(events) ? 'frozen' : 'running';
    }
    if (Number(readCgroupFile(dir, 'pids.current') ?? 0) === 0) return 'stopped';
    if (frozen?.version === 'v1') {
      const fdir = findPayload(name, frozen.parents);
      if (fdir && readCgroupFile(fdir, 'freezer.state')?.trim() === 'FROZEN') return 'frozen';
    }
    return 'running';
  }

  async memoryBytes(id: string): Promise<number | null> {
    const version = this.hostFacts.cgroups.memory;
    const parents = this.#probe?.memory?.parents;
    if (!version || !parents) return null;
    // Straight from cgroupfs (the report reads every sliver's memory; no lxc-cgroup per sliver).
    const dir = findPayload(this.#name(id), parents);
    const stat = dir ? readCgroupFile(dir, 'memory.stat') : null;
    return stat === null ? null : residentBytes(parseMemoryStat(stat), version);
  }

  async oomKills(id: string): Promise<number | null> {
    const version = this.hostFacts.cgroups.memory;
    const parents = this.#probe?.memory?.parents;
    const dir = version && parents ? findPayload(this.#name(id), parents) : null;
    // v1 keeps the count in memory.oom_control, v2 in memory.events (both: "oom_kill N").
    const text = dir ? readCgroupFile(dir, version === 'v1' ? 'memory.oom_control' : 'memory.events') : null;
    const n = text === null ? null : /^oom_kill (\d+)$/m.exec(text)?.[1];
    return n == null ? null : Number(n);
  }

  async cpuSeconds(id: string): Promise<number | null> {
    const cpu = this.#probe?.cpu;
    const dir = cpu ? findPayload(this.#name(id), cpu.parents) : null;
    return dir && cpu ? cpuSecondsOf(dir, cpu.version) : null;
  }

  async memoryPressure(id: string): Promise<Psi | null> {
    const parents = this.#probe?.pressure?.parents;
    const dir = parents ? findPayload(this.#name(id), parents) : null;
    const text = dir ? readCgroupFile(dir, 'memory.pressure') : null;
    return text === null ? null : parsePressure(text);
  }

  async setHostname(id: string, hostname: string): Promise<void> {
    if (!isHostname(hostname)) throw new InvalidSpecError(`hostname must be 1-63 of [A-Za-z0-9_.-], got ${JSON.stringify(hostname)}`);
    const pid = await this.initPid(id);
    if (pid === null) return;
    // Written from the host into the sliver's UTS namespace (the file is per namespace): nothing
    // of the sliver's runs. Not hostname(1): Debian's refuses the '_' of slice names.
    await run('nsenter', [`--target=${pid}`, '--uts', '--', 'sh', '-c', 'printf %s "$1" > /proc/sys/kernel/hostname', 'sh', hostname]);
  }

  async listening(id: string, port: number): Promise<boolean | null> {
    const parents = this.#probe?.populated?.parents;
    const dir = parents ? findPayload(this.#name(id), parents) : null;
    const pid = dir ? pidIn(dir) : null;
    if (pid === null) return null;
    const tables = await Promise.all(['tcp', 'tcp6'].map((t) => readFile(`/proc/${pid}/net/${t}`, 'utf8').catch(() => null)));
    // The process may have exited between the two reads: no table, no answer.
    if (tables.every((t) => t === null)) return null;
    return tables.some((t) => t !== null && listensOn(t, port));
  }

  /** Host pid of the sliver's init, or null when it is not running (for accounting and tests). */
  async initPid(id: string): Promise<number | null> {
    const state = await this.state(id);
    if (state !== 'running' && state !== 'frozen') return null;
    const pid = Number((await this.#lxc('lxc-info', id, ['-p', '-H'])).stdout.trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  /** The container name of a sliver id, refusing anything that is not a uuid. */
  #name(id: string): string {
    if (!isSliverId(id)) throw new InvalidSpecError(`sliver id must be a lowercase uuid, got ${JSON.stringify(id)}`);
    return containerName(id);
  }

  #dir(id: string): string {
    return join(this.lxcPath, this.#name(id));
  }

  /** [command, args, options] of an lxc tool run on a sliver, in the node namespace if any. */
  #argv(tool: LxcTool, id: string | null, args: string[], opts: RunOptions = {}): [string, string[], RunOptions] {
    const argv = ['-P', this.lxcPath, ...(id === null ? [] : ['-n', this.#name(id)]), ...args];
    // cwd /: lxc-attach otherwise tries (and warns about) the agent's own cwd inside the sliver.
    const options = { cwd: '/', ...opts };
    return this.netns === undefined ? [tool, argv, options] : ['nsenter', [`--net=${this.#netnsPath()}`, '--', tool, ...argv], options];
  }

  #netnsPath(): string {
    return join('/run/netns', this.netns ?? '');
  }

  #lxc(tool: LxcTool, id: string | null, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(...this.#argv(tool, id, args, opts));
  }

  /** The ERROR lines of the sliver's LXC log, the part that says why a start failed. */
  async #logErrors(id: string): Promise<string> {
    const log = await readFile(join(this.#dir(id), 'lxc.log'), 'utf8').catch(() => '');
    return log
      .split('\n')
      .filter((l) => / ERROR /.test(l))
      .slice(-8)
      .join('\n');
  }

  async #removeStaleProbes(): Promise<void> {
    for (const name of await readdir(this.rootfsDir)) if (name.startsWith(PROBE_DIR_PREFIX)) await rm(join(this.rootfsDir, name), { recursive: true, force: true });
  }

  /**
   * Proves that unprivileged slivers work on rootfsDir's filesystem, the way they will run:
   * a throwaway container with this host's full config (idmap, idmapped rootfs, seccomp, limits)
   * whose init writes one file. It must appear on disk as uid 0. Returns why not, or null.
   * Everything it makes is undone, success or not.
   */
  async #probeIdmappedRootfs(): Promise<string | null> {
    const busybox = await findStaticBusybox();
    if (!busybox) return 'no static busybox to probe idmapped mounts with (apt-get install busybox-static)';
    const undo = new Reverter();
    try {
      const dir = await mkdtemp(join(this.rootfsDir, PROBE_DIR_PREFIX));
      undo.add(() => rm(dir, { recursive: true, force: true }));
      const rootfs = join(dir, 'rootfs');
      for (const sub of ['bin', 'dev', 'proc', 'sys']) await mkdir(join(rootfs, sub), { recursive: true });
      await copyFile(busybox, join(rootfs, 'bin/busybox'));
      await chmod(join(rootfs, 'bin/busybox'), 0o755);
      const id = randomUUID();
      const spec: InstanceSpec = { id, hostname: 'idmap-probe', rootfs, memoryMb: 32, cpuShares: 1024, pids: 16, idmapBase: this.#probeIdmapBase, net: null };
      const config = renderConfig(spec, this.hostFacts, { lxcPath: this.lxcPath, init: '/bin/busybox touch /idmap-probe' });
      await mkdir(this.#dir(id));
      undo.add(() => this.#removeDir(id));
      await writeFile(join(this.#dir(id), 'config'), config);
      undo.add(() => removeContainerCgroups(containerName(id)));
      undo.add(() => tryRun(...this.#argv('lxc-stop', id, ['-k'])));
      try {
        await this.#lxc('lxc-start', id, ['-d']);
        await this.#lxc('lxc-wait', id, ['-s', 'STOPPED', '-t', '10']);
      } catch (err) {
        const why = await this.#logErrors(id);
        return `a probe container with an idmapped rootfs on ${this.rootfsDir} failed: ${err instanceof CommandError ? err.message : String(err)}${why ? ` (${why.replace(/\n/g, ' / ')})` : ''}`;
      }
      const made = await stat(join(rootfs, 'idmap-probe')).catch(() => null);
      if (!made) return `the probe container's init could not write to its idmapped rootfs on ${this.rootfsDir}`;
      if (made.uid !== 0) return `a file written by the probe's root landed as uid ${made.uid}, not 0: the rootfs was not idmapped`;
      return null;
    } finally {
      await undo.fail();
    }
  }
}
