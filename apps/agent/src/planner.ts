// The planner: what a reconcile pass does to each sliver, worked out from what the agent knows —
// the desired-state document, what the host has, and the ledger — with no I/O at all. The
// builder (builder.ts) carries the steps out through the drivers; reconcile.ts runs the passes.
import { createHash } from 'node:crypto';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import { jsonEqual } from '@planetlite/core';
import type { InstanceState } from '@planetlite/instance';
import type { SliverRecord } from './ledger.js';

export type SliverKind = 'lxc' | 'kvm';

/** Whether slivers of one kind can be built now: their driver passed its check, is still
 * checking (the VM driver's accelerator probe), or cannot run here (off, or its check failed). */
export type Readiness = { state: 'ready' } | { state: 'checking'; why: string } | { state: 'off'; why: string };

/** What the host has, probed once at the start of a pass. */
export interface HostView {
  /** Instances the ready drivers list, with the kind of the driver that listed each and their
   * state; null when not probed (a pass for a new document probes only what it works on: an
   * unchanged sliver is taken as its last pass left it until a whole pass looks). */
  instances: ReadonlyMap<string, { kind: SliverKind; state: InstanceState | null }>;
  /** Slivers with a root filesystem (subvolume). */
  roots: Iterable<string>;
  /** Slivers with host-side network devices. */
  links: Iterable<string>;
  /** Wanted slivers whose live settings differ from the document's, with what differs: cgroup
   * limits of a running or frozen one (a kill between its config and its cgroups, a limit the
   * kernel refused, a change by hand), or its rate caps (tc). */
  drift?: ReadonlyMap<string, string>;
  /** The nftables table is not the one the last apply left (flushed or changed by someone else). */
  tableDrift?: boolean;
}

export interface PassPlan {
  /** On the host or in the ledger, and not wanted: torn down. */
  teardown: string[];
  /** Wanted, and changed since last carried out in full (or no longer in their desired state). */
  ensure: DesiredSliver[];
  /** Wanted and settled: no host work at all. */
  unchanged: number;
}

/** The key under which a sliver's part of the document is remembered once carried out in full
 * (in memory and in the ledger): a digest of it and of the code that carried it out (code, from
 * fingerprint.ts), so an upgraded agent works on each sliver once. */
export function docKey(s: DesiredSliver, code = ''): string {
  // A pass and each sliver's turn ask for the same object's key: one digest per document (a
  // document is parsed afresh and never changed in place).
  const memo = keys.get(s);
  if (memo?.code === code) return memo.key;
  const key = createHash('sha1').update(code).update('\0').update(JSON.stringify(s)).digest('base64url');
  keys.set(s, { code, key });
  return key;
}
const keys = new WeakMap<DesiredSliver, { code: string; key: string }>();

/**
 * Gives each sliver of a new document the key of its part of the previous one when the two say
 * the same: a change of one sliver then digests one part, not all of them (a JSON.stringify and
 * a SHA-1 per sliver, 8.6 ms and their garbage at 2,000 slivers).
 */
export function carryDocKeys(prev: DesiredState | null, next: DesiredState): void {
  if (!prev) return;
  const before = new Map(prev.slivers.map((s) => [s.id, s]));
  for (const s of next.slivers) {
    const old = before.get(s.id);
    const memo = old && keys.get(old);
    if (memo && !keys.has(s) && jsonEqual(old, s)) keys.set(s, memo);
  }
}

/** True when the instance is in the state the sliver's desired state asks for. */
export function settled(s: DesiredSliver, state: InstanceState | undefined): boolean {
  return s.desired === 'running' ? state === 'running' : s.desired === 'frozen' ? state === 'frozen' : state === 'stopped';
}

/**
 * Which slivers a pass works on. Anything the host or the ledger holds that the document does not
 * want goes (crash leftovers included: a container, link or subvolume no record names, a record
 * the host lacks); a wanted sliver whose part of the document is unchanged since its last full
 * pass, and whose instance is still in the state that pass left, costs nothing.
 */
export function planPass(doc: DesiredState, host: HostView, ledger: readonly SliverRecord[], done: ReadonlyMap<string, string>, code = ''): PassPlan {
  const wanted = new Map(doc.slivers.filter((s) => s.desired !== 'deleted').map((s) => [s.id, s]));
  const present = new Set<string>([...ledger.map((r) => r.id), ...host.instances.keys(), ...host.roots, ...host.links]);
  const teardown = [...present].filter((id) => !wanted.has(id));
  const ensure: DesiredSliver[] = [];
  let unchanged = 0;
  for (const s of wanted.values()) {
    const inst = host.instances.get(s.id);
    if (done.get(s.id) === docKey(s, code) && inst && (inst.state === null || settled(s, inst.state)) && !host.drift?.has(s.id)) unchanged++;
    else ensure.push(s);
  }
  return { teardown, ensure, unchanged };
}

/** What the builder knows of one sliver when its turn comes (its queue runs it). */
export interface SliverFacts {
  sliver: DesiredSliver;
  /** Its ledger record, if it has one. */
  record: SliverRecord | undefined;
  /** The driver of its kind. */
  readiness: Readiness;
  /** The node's image of that name (images.json), and whether the storage pool holds it. */
  localImage: { sha256: string; stored: boolean } | undefined;
  /** An image fetcher runs on this node. */
  canFetch: boolean;
  hasRoot: boolean;
  /** The instance's state, probed as the sliver's turn came — only when its document is
   * unchanged (done), to tell whether anything is to do; null when not probed. */
  state: InstanceState | null;
  /** Its part of the document is the one last carried out in full. */
  done: boolean;
  /** What of its live settings differs from the document's (cgroup files, rate caps), probed
   * with state (none: in step). */
  drift?: readonly string[];
  /** The memory watchdog's 'restore': a fresh root from the image, whatever reset_seq says. */
  restore?: boolean;
}

/** One step of a build, in the testbed's words; the builder has one function per step. */
export type Step =
  /** The ledger record: the sliver's /30 slot and host uid range (written before the host is touched). */
  | { do: 'claim' }
  /** A warm-pool spare handed out: the ledger gives it the slice; the root step then provisions
   * the slice into it (it never ran slice code). */
  | { do: 'adopt' }
  /** The running instance of an adopted spare takes the slice's name as its hostname. */
  | { do: 'hostname' }
  /** A reset: the instance and the root go, the ledger forgets the image and keys (and records the reset). */
  | { do: 'wipe'; resetSeq: number | null }
  /** The root filesystem (a snapshot of the image with its quota); provision: made a sliver of its slice. */
  | { do: 'root'; provision: boolean }
  /** Host-side link, rate caps, and the nftables table. */
  | { do: 'link' }
  /** The instance's config (limits, idmap, network). */
  | { do: 'define' }
  /** The lifecycle steps below, planned by planLifecycle from one state probe right after define. */
  | { do: 'lifecycle' }
  /** A running or frozen sliver's live limits brought to the document's: only those that differ
   * are written; one the kernel refuses stays the sliver's error until a pass applies it. */
  | { do: 'limits' }
  | { do: 'stop' }
  | { do: 'start' }
  | { do: 'freeze' }
  | { do: 'thaw' }
  /** The ledger notes that the asked-for restart has been carried out. */
  | { do: 'restarted'; seq: number }
  /** The slice's keys written from inside the running sliver. */
  | { do: 'keys' };

export type SliverPlan =
  /** Settled: nothing to do. */
  | { action: 'none' }
  /** Nothing can be built now; the sliver shows this state and error. */
  | { action: 'wait'; state: 'provisioning' | 'failed'; error: string }
  /** The image is not here: the fetcher is asked for it, and the sliver shows its progress. */
  | { action: 'fetch'; image: { name: string; sha256: string; magnet: string | null; webSeed: string | null } }
  | {
      action: 'build';
      kind: SliverKind;
      /** The image the root is (or would be) made from. */
      sha256: string;
      /** Keep seeding the image to other nodes. */
      seed: boolean;
      /** No root yet: the sliver shows 'provisioning' while it is built. */
      fresh: boolean;
      /** Stages in order; the steps of one stage run side by side. */
      stages: Step[][];
    };

export function keysHash(keys: readonly string[]): string {
  return createHash('sha256').update(keys.join('\n')).digest('hex');
}

export function kindOf(s: Pick<DesiredSliver, 'kind'>): SliverKind {
  return s.kind === 'kvm' ? 'kvm' : 'lxc';
}

/**
 * The steps that bring one sliver from what it is to what the document asks: its record, a reset,
 * root and link, config, then its lifecycle (planLifecycle, from a state probe after define, as
 * the config may have just been made).
 */
export function planSliver(f: SliverFacts): SliverPlan {
  const s = f.sliver;
  // Settled is not enough: the live limits must be the document's too, else the build goes again
  // (config unchanged, nothing restarted) and its last step writes them.
  if (f.done && !f.restore && f.state !== null && settled(s, f.state) && !f.drift?.length) return { action: 'none' };
  if (f.readiness.state !== 'ready') return { action: 'wait', state: f.readiness.state === 'checking' ? 'provisioning' : 'failed', error: f.readiness.why };

  // The registry's published archive wins over a local one of the same name.
  const local = f.localImage && (!s.image.sha256 || f.localImage.sha256 === s.image.sha256) ? f.localImage : undefined;
  if (!local?.stored) return imageMissing(s.image, f.canFetch);

  const stages: Step[][] = [];
  let rec = f.record ?? { image_sha256: null, reset_seq: 0 };
  if (!f.record) stages.push([{ do: 'claim' }]);
  const spare = f.record?.spare === true;
  if (spare) {
    // The registry hands out only a spare of the slice's kind; one of another kind is left alone.
    if ((f.record!.kind ?? 'lxc') !== kindOf(s)) return { action: 'wait', state: 'failed', error: `warm-pool spare ${s.id} is a ${f.record!.kind ?? 'lxc'} sliver, not ${kindOf(s)}; delete this sliver and create it again` };
    stages.push([{ do: 'adopt' }]);
  }
  let hasRoot = f.hasRoot;
  // A spare made from another image than the slice's (the image was published again since) gets
  // a fresh root from the right one.
  if (s.reset_seq > rec.reset_seq || f.restore || (spare && rec.image_sha256 !== local.sha256)) {
    // A fresh root filesystem from the image, then on as usual.
    stages.push([{ do: 'wipe', resetSeq: s.reset_seq > rec.reset_seq ? s.reset_seq : null }]);
    rec = { ...rec, image_sha256: null };
    hasRoot = false;
  }
  // The root filesystem and the network do not depend on each other: built side by side.
  // A spare's hostname beside them: its port may answer before the build is done.
  stages.push([{ do: 'root', provision: !hasRoot || rec.image_sha256 === null || spare }, { do: 'link' }, ...(spare ? [{ do: 'hostname' } as const] : [])], [{ do: 'define' }], [{ do: 'lifecycle' }], [{ do: 'limits' }]);
  return {
    action: 'build',
    kind: kindOf(s),
    sha256: local.sha256,
    seed: f.canFetch && s.image.magnet !== null && s.image.sha256 === local.sha256,
    fresh: !hasRoot,
    stages,
  };
}

/**
 * A defined sliver's lifecycle, from its state right after define and its ledger record (which
 * provisioning has brought up to date): a restart asked for, thaw, start, freeze or stop, and the
 * keys written from inside when they changed. Also what the sliver is when done (a frozen one
 * shows as stopped: the API's states have no 'frozen').
 */
export function planLifecycle(s: DesiredSliver, record: Pick<SliverRecord, 'restart_seq' | 'keys_hash'>, state: InstanceState): { steps: Step[]; ends: 'running' | 'stopped' } {
  const steps: Step[] = [];
  if (s.desired !== 'stopped' && s.restart_seq > record.restart_seq && state !== 'absent') {
    steps.push({ do: 'stop' });
    state = 'stopped';
  }
  if (s.restart_seq !== record.restart_seq) steps.push({ do: 'restarted', seq: s.restart_seq });
  if (s.desired === 'running' || s.desired === 'frozen') {
    if (state === 'frozen' && s.desired === 'running') {
      steps.push({ do: 'thaw' });
      state = 'running';
    }
    if (state === 'stopped' || state === 'absent') {
      steps.push({ do: 'start' });
      state = 'running';
    }
    if (s.desired === 'frozen' && state === 'running') {
      steps.push({ do: 'freeze' });
      state = 'frozen';
    }
  } else if (state === 'running' || state === 'frozen') {
    steps.push({ do: 'stop' });
    state = 'stopped';
  }
  // Provisioning wrote the keys into the root; a sliver that has run gets them from inside.
  if (state === 'running' && record.keys_hash !== keysHash(s.keys)) steps.push({ do: 'keys' });
  return { steps, ends: state === 'running' ? 'running' : 'stopped' };
}

function imageMissing(image: DesiredSliver['image'], canFetch: boolean): SliverPlan {
  const { name, sha256, magnet, web_seed: webSeed } = image;
  if (canFetch && sha256 && (magnet || webSeed)) return { action: 'fetch', image: { name, sha256, magnet, webSeed } };
  return { action: 'wait', state: 'provisioning', error: `image ${name} is not on this node yet (planetlite-agent image import NAME FILE)` };
}

/** What a sliver waiting for its image shows, from the fetcher's state of it. A failed fetch is
 * the sliver's error; the fetcher retries and a new pass follows. */
export function fetchStatus(name: string, f: { state: string; error: string | null; progress: number } | undefined): { state: 'provisioning' | 'failed'; error: string } {
  if (f?.state === 'failed') return { state: 'failed', error: `image ${name}: ${f.error}` };
  return { state: 'provisioning', error: `fetching image ${name} (${Math.round((f?.progress ?? 0) * 100)}%)` };
}

export type TeardownStep = 'destroy' | 'table' | 'unlink' | 'delete root' | 'release';

/**
 * Tearing a sliver down: its instance (unless its kind cannot run here: then there is none), the
 * nftables table rewritten without it, its link, its root, and last its ledger record, so that a
 * crash or a failure part-way leaves the record and a later pass finishes the job. While the
 * driver of its kind is still checking, an instance of an earlier run may be up: it waits. So it
 * does when the container driver failed its check (containers always run here, so one of an
 * earlier run may be up, unseen): its root is never deleted under it.
 */
export function planTeardown(readiness: Readiness, kind: SliverKind): { action: 'wait'; error: string } | { action: 'teardown'; steps: TeardownStep[] } {
  if (readiness.state === 'checking' || (readiness.state === 'off' && kind === 'lxc')) return { action: 'wait', error: `teardown: ${readiness.why}` };
  const rest: TeardownStep[] = ['table', 'unlink', 'delete root', 'release'];
  return { action: 'teardown', steps: readiness.state === 'ready' ? ['destroy', ...rest] : rest };
}

/** A plan in a few words, for logs and tests: stages joined by ', ', side-by-side steps by ' & '. */
export function describePlan(p: SliverPlan): string {
  if (p.action !== 'build') return p.action;
  return p.stages
    .map((stage) =>
      stage
        .map((st) => (st.do === 'root' ? (st.provision ? 'root+provision' : 'root') : st.do === 'wipe' ? (st.resetSeq === null ? 'wipe' : `wipe ${st.resetSeq}`) : st.do === 'restarted' ? `restarted ${st.seq}` : st.do))
        .join(' & '),
    )
    .join(', ');
}
