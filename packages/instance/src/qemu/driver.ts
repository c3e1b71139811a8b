// The qemu instance driver: a sliver is a VM whose root is the sliver's own directory over
// virtio-9p, booted with the node-built initramfs, run by a detached qemu (inside the node's
// network namespace when one is given) and driven through QMP and a control serial port.
import { availableParallelism } from 'node:os';
import { chown, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { Reverter, requireTools, tryRun, type RunResult } from '@planetlite/host';
import { InstanceError } from '../errors.js';
import { isSliverId, trackCheck, validateInstanceSpec, type InstanceCapabilities, type InstanceDriver, type InstanceDriverStatus, type InstanceSpec, type InstanceState } from '../driver.js';
import { cpuSecondsOf, detectCgroupLayout, parseMemoryStat, readCgroupFile, removeContainerCgroups, residentBytes, type CgroupLayout } from '../lxc/cgroup.js';
import { containerName } from '../lxc/config.js';
import { findStaticBusybox } from '../lxc/probe.js';
import { applyVmLimits, cgroupDirs, vmCgroup, vmLimits, type VmCgroup } from './cgroup.js';
import { JAIL_PYTHON, jailArgv, type JailSpec } from './jail.js';
import { controlExec, controlHalt, qmp, qmpStatus } from './channel.js';
import { QEMU_PATH, renderQemuArgv, validateVmConfig, vmJailSpec, vmConfigFromSpec, vmPaths, type Accel, type BootAssets, type VmConfig, type VmPaths } from './config.js';
import { DEFAULT_KERNEL_CACHE, imageKernel, nodeKernel } from './kernel.js';
import { canOpen, probeAccel, probeBoot, VM_TOOLS } from './probe.js';
import { livePid, processCpuSeconds, processResidentBytes, spawnQemu, waitGone } from './process.js';

export interface QemuDriverOptions {
  /** The driver's own directory: one subdirectory per sliver (config.json, qemu.pid, console.log,
   * qemu.log, run/ with qmp.sock and control.sock, jail/, and the image's kernel when it brings
   * one). */
  vmPath: string;
  /** Run qemu inside the network namespace NETNS (`nsenter --net=/run/netns/NETNS`), where the
   * slivers' taps are: a node namespace in multi-node tests, as for the LXC driver. */
  netns?: string;
  /** Where the node kernel package, its unpacked kernel and the initramfs are cached. */
  kernelCache?: string;
  /** 'auto' (default): KVM when a probe boot under it passes, else TCG. */
  accel?: Accel | 'auto';
}

/** A unix socket path is at most 107 bytes; the longest one is <vmPath>/<uuid>/run/control.sock. */
const MAX_VM_PATH = 107 - '/00000000-0000-0000-0000-000000000000/run/control.sock'.length;
/** Console logs append across boots; past this size a start moves the old one to console.log.1. */
const CONSOLE_ROTATE_BYTES = 1 << 20;
const PIDFILE_TIMEOUT_MS = 10_000;
const QMP_TIMEOUT_MS = 5000;
const EXEC_TIMEOUT_MS = 120_000;

export class QemuDriver implements InstanceDriver {
  readonly name = 'qemu';
  readonly vmPath: string;
  readonly netns: string | undefined;
  readonly kernelCache: string;
  readonly #accelOption: Accel | 'auto';
  #accel: Accel | null = null;
  #status: InstanceDriverStatus = { state: 'unchecked' };
  #nodeBoot: BootAssets | null = null;
  #busybox = '';
  #layout: CgroupLayout | null = null;
  /** One lifecycle call at a time per sliver: QMP and the control port each take one client. */
  readonly #queues = new Map<string, Promise<unknown>>();

  constructor(opts: QemuDriverOptions) {
    for (const [key, dir] of [['vmPath', opts.vmPath], ['kernelCache', opts.kernelCache]] as const)
      if (dir !== undefined && (!isAbsolute(dir) || /[\n\r\0]/.test(dir))) throw new InstanceError('invalid_options', `qemu driver: ${key} must be an absolute path, got ${JSON.stringify(dir)}`);
    if (opts.vmPath.length > MAX_VM_PATH) throw new InstanceError('invalid_options', `qemu driver: vmPath ${opts.vmPath} is longer than ${MAX_VM_PATH} bytes, too long for its VMs' unix sockets`);
    if (opts.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(opts.netns)) throw new InstanceError('invalid_options', `qemu driver: bad netns name ${JSON.stringify(opts.netns)}`);
    this.vmPath = opts.vmPath;
    this.netns = opts.netns;
    this.kernelCache = opts.kernelCache ?? DEFAULT_KERNEL_CACHE;
    this.#accelOption = opts.accel ?? 'auto';
  }

  /**
   * unprivileged: qemu runs as the sliver's own host ids in a user namespace, jailed (jail.ts).
   * Freezing is a QMP stop; memory is capped by the guest's RAM size (-m) and by the sliver's
   * memory cgroup around qemu (cgroup.ts).
   */
  get capabilities(): InstanceCapabilities {
    return { unprivileged: true, freeze: true, memoryLimit: true };
  }

  /** The accelerator check() chose, for the agent's `kvm_accel` node capability. */
  get accel(): Accel {
    if (!this.#accel) throw new InstanceError('not_checked', 'qemu driver: call check() before using the driver');
    return this.#accel;
  }

  /** The node kernel check() found or fetched. */
  get nodeBoot(): BootAssets {
    if (!this.#nodeBoot) throw new InstanceError('not_checked', 'qemu driver: call check() before using the driver');
    return this.#nodeBoot;
  }

  get status(): InstanceDriverStatus {
    return this.#status;
  }

  /** Checks tools, the tap device node and the namespace, fetches the node kernel, then boots a
   * probe guest to choose the accelerator; status says how far it got. */
  check(): Promise<void> {
    return trackCheck((s) => (this.#status = s), async () => {
      await this.#check();
      return { accel: this.accel };
    });
  }

  async #check(): Promise<void> {
    if (process.geteuid?.() !== 0) throw new InstanceError('unsupported', 'qemu driver: must run as root (it jails each qemu under the sliver\'s own ids, and opens its tap)');
    if ((await tryRun(JAIL_PYTHON, ['-I', '-S', '-c', 'import ctypes, fcntl, json, struct'])) === null)
      throw new InstanceError('missing_tool', `qemu driver: ${JAIL_PYTHON} with ctypes is needed to jail qemu (apt-get install python3)`);
    if (!(await stat(QEMU_PATH).catch(() => null))?.isFile()) throw new InstanceError('missing_tool', `qemu driver: ${QEMU_PATH} is missing (apt-get install qemu-system-x86); the jail holds only /usr`);
    this.#layout = await detectCgroupLayout();
    if (!this.#layout.memory || !this.#layout.cpu || !this.#layout.pids)
      throw new InstanceError('missing_kernel_feature', `qemu driver: the memory, cpu and pids cgroup controllers are needed to limit VMs as containers are (found memory ${this.#layout.memory ?? 'none'}, cpu ${this.#layout.cpu ?? 'none'}, pids ${this.#layout.pids ?? 'none'}; is /sys/fs/cgroup visible here?)`);
    await requireTools([...VM_TOOLS, ...(this.netns !== undefined ? ['nsenter'] : [])], 'the qemu driver', (m) => new InstanceError('missing_tool', m));
    if (!(await canOpen('/dev/net/tun'))) throw new InstanceError('missing_kernel_feature', 'qemu driver: /dev/net/tun cannot be opened (modprobe tun)');
    if (this.netns !== undefined && (await tryRun('nsenter', [`--net=${this.#netnsPath()}`, 'true'])) === null)
      throw new InstanceError('missing_kernel_feature', `qemu driver: network namespace ${this.netns} does not exist (ip netns add ${this.netns})`);
    const busybox = await findStaticBusybox();
    if (!busybox) throw new InstanceError('missing_tool', 'qemu driver: no static busybox for the initramfs (apt-get install busybox-static)');
    this.#busybox = busybox;
    this.#nodeBoot = await nodeKernel(this.kernelCache, busybox);
    this.#accel = await this.#chooseAccel(this.#nodeBoot);
    await mkdir(this.vmPath, { recursive: true, mode: 0o700 });
  }

  async #chooseAccel(boot: BootAssets): Promise<Accel> {
    const probe = { kernel: boot.kernel, initrd: boot.initrd };
    if (this.#accelOption === 'tcg') return 'tcg';
    if (this.#accelOption === 'kvm') {
      if (!(await canOpen('/dev/kvm'))) throw new InstanceError('missing_kernel_feature', 'qemu driver: accel kvm, but /dev/kvm is missing or not read-writable (modprobe kvm_intel or kvm_amd)');
      if (!(await probeBoot('kvm', probe))) throw new InstanceError('missing_kernel_feature', 'qemu driver: accel kvm, but a probe boot under KVM failed or hung; use accel auto or tcg');
      return 'kvm';
    }
    const accel = await probeAccel(probe);
    if (!accel) throw new InstanceError('missing_kernel_feature', `qemu driver: the node kernel ${boot.kernel} does not boot under TCG either; delete ${this.kernelCache} to fetch it again`);
    return accel;
  }

  async define(spec: InstanceSpec): Promise<void> {
    validateInstanceSpec(spec);
    const nodeBoot = this.nodeBoot;
    const root = await stat(spec.rootfs).catch(() => null);
    if (!root?.isDirectory()) throw new InstanceError('rootfs_missing', `qemu driver: rootfs ${spec.rootfs} of sliver ${spec.id} is not a directory (make the snapshot first)`);
    await this.#serial(spec.id, async () => {
      const paths = this.#paths(spec.id);
      const previous = await readFile(paths.config, 'utf8').catch(() => null);
      const config = vmConfigFromSpec(spec, nodeBoot, availableParallelism());
      // A running VM takes a new config at its next start (memory and vCPUs are fixed at boot).
      await Reverter.wrap(async (r) => {
        const madeDir = await mkdir(paths.dir, { recursive: true, mode: 0o700 });
        if (madeDir) r.add(() => rm(paths.dir, { recursive: true, force: true }));
        config.boot = await this.#bootAssets(spec, paths, previous);
        validateVmConfig(config);
        const text = `${JSON.stringify(config, null, 2)}\n`;
        // Limits reach a running VM at once, as lxc-cgroup does for a container.
        if (await livePid(paths.pidfile)) await applyVmLimits(await this.#cgroup(spec.id), vmLimits(spec, await this.#cgroupLayout()));
        if (text === previous) return;
        const tmp = `${paths.config}.tmp-${process.pid}`;
        r.add(() => rm(tmp, { force: true }));
        await writeFile(tmp, text, { mode: 0o600 });
        await rename(tmp, paths.config);
      });
    });
  }

  /**
   * The image's own kernel when it ships one (the issue: "its kernel and initrd from the image"),
   * else the node kernel. Decided at the first define, from imageRoot or from the snapshot before
   * the guest has run on it, and kept: a guest must not choose what the host unpacks later.
   */
  async #bootAssets(spec: InstanceSpec, paths: VmPaths, previous: string | null): Promise<BootAssets> {
    const old = previous === null ? null : parseJson<Partial<VmConfig>>(previous)?.boot;
    if (old?.source === 'image' && (await stat(old.kernel).catch(() => null)) && (await stat(old.initrd).catch(() => null))) return old;
    if (previous !== null) return this.nodeBoot;
    return (await imageKernel(spec.imageRoot ?? spec.rootfs, join(paths.dir, 'boot'), this.#busybox)) ?? this.nodeBoot;
  }

  async start(id: string): Promise<void> {
    await this.#serial(id, async () => {
      const state = await this.state(id);
      if (state === 'absent') throw new InstanceError('not_defined', `qemu driver: sliver ${id} is not defined`);
      if (state !== 'stopped') return;
      const paths = this.#paths(id);
      const config = await this.#config(paths);
      if (!(await stat(config.rootfs).catch(() => null))?.isDirectory()) throw new InstanceError('rootfs_missing', `qemu driver: rootfs ${config.rootfs} of sliver ${id} is gone`);
      if (config.net) await this.#checkTap(config.net.tap);
      await this.#clearRuntime(paths);
      await this.#rotateConsole(paths);
      await writeFile(paths.qemuLog, '', { mode: 0o600 });
      const jail = await this.#prepareJail(id, paths, config);
      const { exited } = spawnQemu(jailArgv(jail, [QEMU_PATH, ...renderQemuArgv(config, paths, this.accel)]), { netns: this.netns, log: paths.qemuLog, cwd: paths.dir });
      try {
        await this.#waitStarted(paths, exited);
      } catch (err) {
        const pid = await livePid(paths.pidfile);
        if (pid) process.kill(pid, 'SIGKILL');
        if (pid) await waitGone(paths.pidfile, pid, 10_000);
        await removeContainerCgroups(containerName(id)).catch(() => undefined);
        const why = (await readFile(paths.qemuLog, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join('\n');
        throw new InstanceError('start_failed', `qemu driver: sliver ${id} failed to start: ${err instanceof Error ? err.message : String(err)}${why ? `\n${why}` : ''}`, { cause: err });
      }
    });
  }

  /**
   * Everything the jail needs, made as root before the spawn: the sliver's cgroups with its limits,
   * the run directory and the two files qemu writes, owned by the VM's uid; and the jail's spec.
   * Only these, the kernel, /usr and a few devices are in qemu's mount namespace.
   */
  async #prepareJail(id: string, paths: VmPaths, config: VmConfig): Promise<JailSpec> {
    const uid = config.idmapBase;
    // A qemu killed by anything but this driver leaves its cgroup behind: start from a clean one.
    await removeContainerCgroups(containerName(id));
    await applyVmLimits(await this.#cgroup(id), vmLimits({ memoryMb: config.memoryMb, ...config.limits, pids: config.limits.pids ?? undefined }, await this.#cgroupLayout()));
    await mkdir(paths.run, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    await mkdir(paths.jail, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    await writeFile(paths.pidfile, '', { mode: 0o600 });
    await writeFile(paths.console, '', { flag: 'a', mode: 0o600 });
    for (const p of [paths.run, paths.pidfile, paths.console]) await chown(p, uid, uid);
    const kvm = this.accel === 'kvm' ? await stat('/dev/kvm') : null;
    return vmJailSpec(config, paths, {
      accel: this.accel,
      ldCache: (await stat('/etc/ld.so.cache').catch(() => null)) !== null,
      cgroups: cgroupDirs(await this.#cgroup(id)),
      // /dev/kvm is root:kvm 0660 on Debian: qemu keeps the kvm group, nothing else of the host's.
      extraGid: kvm && (kvm.mode & 0o006) !== 0o006 ? kvm.gid : null,
    });
  }

  /** The host's cgroup layout: check() reads it, and a driver that has not been checked (an
   * agent reading a VM's memory before its check is done) reads it here. */
  async #cgroupLayout(): Promise<CgroupLayout> {
    this.#layout ??= await detectCgroupLayout();
    return this.#layout;
  }

  async #cgroup(id: string): Promise<VmCgroup> {
    return vmCgroup(containerName(id), await this.#cgroupLayout());
  }

  /** Resolves once qemu has written its pidfile and answers on QMP. */
  async #waitStarted(paths: VmPaths, exited: Promise<number | null>): Promise<void> {
    let code: number | null | undefined;
    void exited.then((c) => (code = c));
    const deadline = Date.now() + PIDFILE_TIMEOUT_MS;
    while (!(await livePid(paths.pidfile))) {
      if (code !== undefined) throw new Error(`qemu exited with ${code}`);
      if (Date.now() > deadline) throw new Error(`qemu wrote no pidfile within ${PIDFILE_TIMEOUT_MS} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // The pidfile comes before qemu has made its sockets.
    for (;;) {
      const status = await qmpStatus(paths.qmp, QMP_TIMEOUT_MS).catch((err: unknown) => {
        if (Date.now() > deadline || code !== undefined) throw err;
        return null;
      });
      if (status === 'running') return;
      if (status !== null) throw new Error(`qemu is ${status}, not running`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** qemu would make a missing tap itself, unconnected: refuse, the network driver owns the tap. */
  async #checkTap(tap: string): Promise<void> {
    const args = ['-d', '-o', 'link', 'show', 'dev', tap];
    const shown = this.netns === undefined ? await tryRun('ip', args) : await tryRun('nsenter', [`--net=${this.#netnsPath()}`, '--', 'ip', ...args]);
    const where = this.netns === undefined ? 'on the host' : `in netns ${this.netns}`;
    if (!shown) throw new InstanceError('host_broken', `qemu driver: tap ${tap} does not exist ${where} (the network driver makes it: link kind 'tap')`);
    if (!/\btun type tap\b/.test(shown.stdout)) throw new InstanceError('host_broken', `qemu driver: ${tap} ${where} is not a tap device`);
  }

  async stop(id: string, timeoutS = 10): Promise<void> {
    await this.#serial(id, async () => {
      const paths = this.#paths(id);
      const pid = await livePid(paths.pidfile);
      if (pid === null) return this.#clearRuntime(paths);
      // A paused guest cannot take the halt.
      if (await this.#isFrozen(paths)) await qmp(paths.qmp, 'cont', QMP_TIMEOUT_MS).catch(() => undefined);
      // Clean: SIGPWR to the image's init, as lxc-stop sends; the VM powers off when it ends.
      if ((await controlHalt(paths.control)) && (await waitGone(paths.pidfile, pid, timeoutS * 1000))) return this.#clearRuntime(paths);
      await qmp(paths.qmp, 'quit', QMP_TIMEOUT_MS).catch(() => undefined);
      if (await waitGone(paths.pidfile, pid, 5000)) return this.#clearRuntime(paths);
      await this.#sigkill(paths, pid);
    });
  }

  /** SIGKILL to qemu at once: with a 9p root there is no guest disk to corrupt (the watchdog). */
  async kill(id: string): Promise<void> {
    const paths = this.#paths(id);
    const pid = await livePid(paths.pidfile);
    if (pid !== null) await this.#sigkill(paths, pid);
  }

  async #sigkill(paths: VmPaths, pid: number): Promise<void> {
    process.kill(pid, 'SIGKILL');
    if (!(await waitGone(paths.pidfile, pid, 10_000))) throw new InstanceError('host_broken', `qemu driver: qemu pid ${pid} survived SIGKILL for 10 s (stuck in the kernel?)`);
    await this.#clearRuntime(paths);
  }

  async freeze(id: string): Promise<void> {
    await this.#serial(id, async () => {
      const state = await this.state(id);
      if (state === 'frozen') return;
      if (state !== 'running') throw new InstanceError('wrong_state', `qemu driver: sliver ${id} is ${state}, not running`);
      const paths = this.#paths(id);
      await qmp(paths.qmp, 'stop', QMP_TIMEOUT_MS);
      await writeFile(paths.frozenMark, '');
    });
  }

  async thaw(id: string): Promise<void> {
    await this.#serial(id, async () => {
      const state = await this.state(id);
      if (state === 'running') return;
      if (state !== 'frozen') throw new InstanceError('wrong_state', `qemu driver: sliver ${id} is ${state}, not frozen`);
      const paths = this.#paths(id);
      await qmp(paths.qmp, 'cont', QMP_TIMEOUT_MS);
      await rm(paths.frozenMark, { force: true });
    });
  }

  /** From the pidfile and /proc, then QMP: a paused VM is frozen. */
  async state(id: string): Promise<InstanceState> {
    const paths = this.#paths(id);
    if (!(await stat(paths.config).catch(() => null))) return 'absent';
    if ((await livePid(paths.pidfile)) === null) return 'stopped';
    const status = await qmpStatus(paths.qmp, QMP_TIMEOUT_MS).catch(() => null);
    if (status === null) return (await this.#isFrozen(paths)) ? 'frozen' : 'running';
    if (status === 'paused') return 'frozen';
    // shutdown: qemu is on its way out after the guest powered off.
    return status === 'shutdown' ? 'stopped' : 'running';
  }

  /** Every sliver's state without a socket per VM: pidfile, /proc and the driver's frozen mark. */
  async states(): Promise<Map<string, InstanceState>> {
    const out = new Map<string, InstanceState>();
    for (const id of await this.list()) {
      const paths = this.#paths(id);
      if (!(await stat(paths.config).catch(() => null))) out.set(id, 'absent');
      else if ((await livePid(paths.pidfile)) === null) out.set(id, 'stopped');
      else out.set(id, (await this.#isFrozen(paths)) ? 'frozen' : 'running');
    }
    return out;
  }

  /**
   * Runs argv inside the sliver as its root, through the control port the node-built initramfs
   * serves (nsenter into the image init's namespaces and root). The agent only installs keys this
   * way; running inside the guest keeps a symlink the sliver planted from reaching the host, which
   * a host write into the 9p directory would follow. Needs a running guest that has booted far
   * enough to answer (waits for it up to the timeout).
   */
  async exec(id: string, argv: string[], input?: string): Promise<RunResult> {
    if (!argv.length) throw new InstanceError('invalid_spec', 'qemu driver: exec needs a command');
    return this.#serial(id, async () => {
      const paths = this.#paths(id);
      if ((await this.state(id)) !== 'running') throw new InstanceError('wrong_state', `qemu driver: sliver ${id} is not running; exec needs a running guest`);
      return controlExec(paths.control, argv, input ?? '', EXEC_TIMEOUT_MS);
    });
  }

  async destroy(id: string): Promise<void> {
    await this.#serial(id, async () => {
      const paths = this.#paths(id);
      if (!(await stat(paths.dir).catch(() => null))) return;
      // Going away: no clean shutdown. The tap stays; the network driver owns it.
      const pid = await livePid(paths.pidfile);
      if (pid !== null) await this.#sigkill(paths, pid);
      await rm(paths.dir, { recursive: true, force: true });
    });
    this.#queues.delete(id);
  }

  async list(): Promise<string[]> {
    const names = await readdir(this.vmPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    return names.filter(isSliverId).sort();
  }

  /** Resident memory of the sliver's cgroup, as for a container (anonymous and mapped: guest RAM
   * qemu touched, the TCG cache, qemu itself); a VM an older agent started outside a cgroup is
   * read from its process. Null when not running. */
  async memoryBytes(id: string): Promise<number | null> {
    const pid = await livePid(this.#paths(id).pidfile);
    if (pid === null) return null;
    const mem = (await this.#cgroup(id)).dirs.memory;
    const stat = mem ? readCgroupFile(mem.dir, 'memory.stat') : null;
    return (stat !== null ? residentBytes(parseMemoryStat(stat), mem!.version) : null) ?? processResidentBytes(pid);
  }

  /** CPU time of the sliver's cgroup (every vCPU and I/O thread of its qemu) since it started. */
  async cpuSeconds(id: string): Promise<number | null> {
    const pid = await livePid(this.#paths(id).pidfile);
    if (pid === null) return null;
    const cpu = (await this.#cgroup(id)).dirs[(await this.#cgroupLayout()).cpu === 'v2' ? 'cpu' : 'cpuacct'];
    return (cpu && readCgroupFile(cpu.dir, 'cgroup.procs')?.trim() ? cpuSecondsOf(cpu.dir, cpu.version) : null) ?? processCpuSeconds(pid);
  }

  /** The sliver's serial console (kernel, init and `sshd -e` output), appended across boots. */
  consoleLog(id: string): string {
    return this.#paths(id).console;
  }

  /** Why the sliver's qemu ended, from the last line qemu wrote to its log. */
  async exitReason(id: string): Promise<string | null> {
    if (!isSliverId(id)) return null;
    const text = await readFile(this.#paths(id).qemuLog, 'utf8').catch(() => '');
    const last = text.trim().split('\n').at(-1)?.trim();
    return last ? last.slice(0, 300) : 'qemu exited without a word (killed?)';
  }

  /** Host pid of the sliver's qemu, or null when it is not running (accounting and tests). */
  async qemuPid(id: string): Promise<number | null> {
    return livePid(this.#paths(id).pidfile);
  }

  #paths(id: string): VmPaths {
    return vmPaths(this.vmPath, id);
  }

  #netnsPath(): string {
    return join('/run/netns', this.netns ?? '');
  }

  async #config(paths: VmPaths): Promise<VmConfig> {
    const parsed = parseJson<unknown>(await readFile(paths.config, 'utf8'));
    if (parsed === null) throw new InstanceError('not_defined', `qemu driver: ${paths.config} is not JSON; define the sliver again`);
    validateVmConfig(parsed);
    return parsed;
  }

  async #isFrozen(paths: VmPaths): Promise<boolean> {
    return (await stat(paths.frozenMark).catch(() => null)) !== null;
  }

  /** What a dead qemu leaves: its pidfile, sockets, the frozen mark and its cgroups. */
  async #clearRuntime(paths: VmPaths): Promise<void> {
    for (const f of [paths.pidfile, paths.qmp, paths.control, paths.frozenMark]) await rm(f, { force: true });
    const id = paths.dir.split('/').at(-1)!;
    if (isSliverId(id)) await removeContainerCgroups(containerName(id));
  }

  async #rotateConsole(paths: VmPaths): Promise<void> {
    const size = (await stat(paths.console).catch(() => null))?.size ?? 0;
    if (size > CONSOLE_ROTATE_BYTES) await rename(paths.console, `${paths.console}.1`);
  }

  /** Runs fn after every earlier call for this sliver has settled. */
  #serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    this.#queues.set(id, next.catch(() => undefined));
    return next;
  }
}

function parseJson<T>(text: string): T | null {
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}
