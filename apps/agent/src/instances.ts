// A node's slivers are LXC containers or qemu VMs (CoreLab: both, side by side). The reconciler
// talks to one InstanceDriver; this one hands each call to the driver of the sliver's kind, which
// the ledger records before anything is built. The VM driver's check (tools, node kernel, the
// accelerator probe boot) takes seconds, so it runs in the background: containers do not wait
// for it, and VM slivers stay provisioning until it is done.
import type { InstanceCapabilities, InstanceDriver, InstanceSpec, InstanceState } from '@planetlite/instance';
import type { Logger } from '@planetlite/core';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export type SliverKind = 'lxc' | 'kvm';

/** The VM driver as the node sees it: not wanted, still checking, usable, or failed its check. */
type VmStatus = { state: 'off'; why: string } | { state: 'checking' } | { state: 'ready'; accel: 'kvm' | 'tcg' } | { state: 'failed'; why: string };

export class SliverInstances implements InstanceDriver {
  readonly name = 'slivers';
  readonly #lxc: InstanceDriver;
  readonly #vm: (InstanceDriver & { readonly accel?: 'kvm' | 'tcg' }) | null;
  readonly #kindOf: (id: string) => SliverKind | undefined;
  /** Kind of the driver that last listed each id (slivers no ledger record names: leftovers). */
  readonly #seen = new Map<string, SliverKind>();
  #vmStatus: VmStatus;
  #vmChecked: Promise<void> = Promise.resolve();

  constructor(opts: { lxc: InstanceDriver; vm: (InstanceDriver & { readonly accel?: 'kvm' | 'tcg' }) | null; vmOff?: string; kindOf: (id: string) => SliverKind | undefined }) {
    this.#lxc = opts.lxc;
    this.#vm = opts.vm;
    this.#kindOf = opts.kindOf;
    this.#vmStatus = opts.vm ? { state: 'checking' } : { state: 'off', why: opts.vmOff ?? 'VM slivers are off on this node' };
  }

  /** The LXC driver's: the reconciler asks capabilitiesOf(kind) where the kind matters. */
  get capabilities(): InstanceCapabilities {
    return this.#lxc.capabilities;
  }

  capabilitiesOf(kind: SliverKind): InstanceCapabilities {
    return this.#driver(kind).capabilities;
  }

  /** LXC is checked now (the agent does not start without it); the VM driver in the background. */
  async check(): Promise<void> {
    await this.#lxc.check();
  }

  /** Starts the VM driver's check; onDone runs when it has passed or failed. */
  checkVm(log: Logger, onDone: () => void): void {
    const vm = this.#vm;
    if (!vm) return;
    this.#vmChecked = vm.check().then(
      () => {
        this.#vmStatus = { state: 'ready', accel: vm.accel ?? 'tcg' };
        log.info({ accel: this.#vmStatus.accel }, 'VM slivers can run here');
      },
      (err: unknown) => {
        this.#vmStatus = { state: 'failed', why: err instanceof Error ? err.message : String(err) };
        log.warn({ err: this.#vmStatus.why }, 'VM slivers cannot run here');
      },
    ).then(onDone);
  }

  /** Resolves once the VM driver's check is over (tests, shutdown). */
  vmChecked(): Promise<void> {
    return this.#vmChecked;
  }

  /** What the node reports: kvm once the check passed, with the accelerator it chose. */
  kvm(): { kvm: boolean; kvm_accel: 'kvm' | 'tcg' | null } {
    return this.#vmStatus.state === 'ready' ? { kvm: true, kvm_accel: this.#vmStatus.accel } : { kvm: false, kvm_accel: null };
  }

  /** null when slivers of this kind can be built now; else why not, and whether that may pass. */
  unavailable(kind: SliverKind): { why: string; waiting: boolean } | null {
    if (kind === 'lxc') return null;
    switch (this.#vmStatus.state) {
      case 'ready':
        return null;
      case 'checking':
        return { why: 'waiting for the node to check that it can run VMs (accelerator probe)', waiting: true };
      default:
        return { why: `this node cannot run kvm slivers: ${this.#vmStatus.why}`, waiting: false };
    }
  }

  async define(spec: InstanceSpec): Promise<void> {
    return this.#for(spec.id).define(spec);
  }
  async start(id: string): Promise<void> {
    return this.#for(id).start(id);
  }
  async stop(id: string, timeoutS?: number): Promise<void> {
    return this.#for(id).stop(id, timeoutS);
  }
  async kill(id: string): Promise<void> {
    return this.#for(id).kill(id);
  }
  async freeze(id: string): Promise<void> {
    return this.#for(id).freeze(id);
  }
  async thaw(id: string): Promise<void> {
    return this.#for(id).thaw(id);
  }
  state(id: string): Promise<InstanceState> {
    return this.#usable(id) ? this.#for(id).state(id) : Promise.resolve('absent');
  }
  async exec(id: string, argv: string[], input?: string): Promise<{ stdout: string; stderr: string }> {
    return await this.#for(id).exec(id, argv, input);
  }
  async destroy(id: string): Promise<void> {
    // A VM sliver on a node whose VM driver is off has nothing to destroy there; while the
    // driver is being checked, a qemu of an earlier run may still be up: the next pass retries.
    const u = this.unavailable(this.#kind(id));
    if (u?.waiting) throw new Error(u.why);
    if (!u) await this.#for(id).destroy(id);
  }
  memoryBytes(id: string): Promise<number | null> {
    return this.#usable(id) ? this.#for(id).memoryBytes(id) : Promise.resolve(null);
  }
  cpuSeconds(id: string): Promise<number | null> {
    return this.#usable(id) ? this.#for(id).cpuSeconds(id) : Promise.resolve(null);
  }

  /** The serial console's file of a VM sliver (a container has none). */
  consoleFile(id: string): string | null {
    const d = this.#usable(id) ? this.#for(id) : null;
    return d?.consoleLog ? d.consoleLog(id) : null;
  }

  /** Why a VM sliver's qemu ended, from the last line qemu wrote to its log; null if unknown. */
  async exitReason(id: string): Promise<string | null> {
    const console = this.consoleFile(id);
    if (!console) return null;
    const text = await readFile(join(dirname(console), 'qemu.log'), 'utf8').catch(() => '');
    const last = text.trim().split('\n').at(-1)?.trim();
    return last ? last.slice(0, 300) : 'qemu exited without a word (killed?)';
  }

  async states(): Promise<Map<string, InstanceState>> {
    const all = new Map<string, InstanceState>();
    for (const [kind, d] of this.#drivers()) {
      for (const [id, st] of await d.states()) {
        this.#seen.set(id, kind);
        all.set(id, st);
      }
    }
    return all;
  }

  async list(): Promise<string[]> {
    const ids: string[] = [];
    for (const [kind, d] of this.#drivers()) {
      for (const id of await d.list()) {
        this.#seen.set(id, kind);
        ids.push(id);
      }
    }
    return ids;
  }

  #drivers(): Array<[SliverKind, InstanceDriver]> {
    return this.#vm && this.#vmStatus.state === 'ready' ? [['lxc', this.#lxc], ['kvm', this.#vm]] : [['lxc', this.#lxc]];
  }

  #kind(id: string): SliverKind {
    return this.#kindOf(id) ?? this.#seen.get(id) ?? 'lxc';
  }

  #usable(id: string): boolean {
    return this.unavailable(this.#kind(id)) === null;
  }

  #for(id: string): InstanceDriver {
    return this.#driver(this.#kind(id));
  }

  #driver(kind: SliverKind): InstanceDriver {
    if (kind === 'lxc') return this.#lxc;
    const why = this.unavailable(kind);
    if (why) throw new Error(why.why);
    return this.#vm!;
  }
}
