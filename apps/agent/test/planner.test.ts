// The planner alone: every transition of a sliver, from plain values (no drivers, no host).
import { describe, expect, it } from 'vitest';
import type { DesiredSliver, DesiredState } from '@planetlite/api';
import type { InstanceState } from '@planetlite/instance';
import type { SliverRecord } from '../src/ledger.js';
import { carryDocKeys, describePlan, docKey, fetchStatus, keysHash, planLifecycle, planPass, planSliver, planTeardown, type HostView, type SliverFacts, type SliverPlan } from '../src/planner.js';

const SHA = 'a'.repeat(64);
const OTHER = 'b'.repeat(64);
const ID = '00000000-0000-4000-8000-000000000001';
const KEYS = ['ssh-ed25519 AAAA member@lab'];

function sliver(patch: Partial<DesiredSliver> = {}): DesiredSliver {
  return {
    id: ID, slice: 'lab_exp', kind: 'lxc', desired: 'running', restart_seq: 0, reset_seq: 0,
    image: { name: 'tiny', sha256: SHA, magnet: null, web_seed: null },
    resources: { memory_mb: 64, cpu_shares: 1024, disk_mb: 64, net_kbps: 1000 }, memory_reset: 'restart',
    ports: { first: 20000, last: 20009 }, expires_at: '2030-01-01T00:00:00.000Z', keys: KEYS,
    ...patch,
  };
}

function record(patch: Partial<SliverRecord> = {}): SliverRecord {
  return { id: ID, slice: 'lab_exp', slot: 0, idmap_base: 1_000_000, image_sha256: SHA, kind: 'lxc', restart_seq: 0, reset_seq: 0, keys_hash: keysHash(KEYS), ...patch };
}

/** A sliver built and running, as the last pass left it. */
function built(s: DesiredSliver = sliver(), patch: Partial<SliverFacts> = {}): SliverFacts {
  // The state is probed only for an unchanged document (done).
  return { sliver: s, record: record(), readiness: { state: 'ready' }, localImage: { sha256: SHA, stored: true }, canFetch: true, hasRoot: true, state: patch.done ? 'running' : null, done: false, ...patch };
}

/** A sliver never seen before on this node. */
function brandNew(s: DesiredSliver = sliver(), patch: Partial<SliverFacts> = {}): SliverFacts {
  return built(s, { record: undefined, hasRoot: false, ...patch });
}

const plan = (f: SliverFacts): string => describePlan(planSliver(f));

describe('the planner, one sliver', () => {
  const refresh = 'root & link, define, lifecycle, limits';
  const table: Array<[string, SliverFacts, string]> = [
    ['new sliver: claimed, root provisioned beside its link, defined, then its lifecycle', brandNew(), 'claim, root+provision & link, define, lifecycle, limits'],
    ['settled and unchanged since the last full pass: nothing', built(sliver(), { done: true }), 'none'],
    ['unchanged document but the instance died: built again (the lifecycle starts it)', built(sliver(), { done: true, state: 'stopped' }), refresh],
    ['unchanged, frozen as asked: nothing', built(sliver({ desired: 'frozen' }), { done: true, state: 'frozen' }), 'none'],
    ['changed document (resources, keys, desired state): root (quota), link (caps), config refreshed, then the lifecycle', built(sliver({ resources: { memory_mb: 128, cpu_shares: 512, disk_mb: 128, net_kbps: 2000 } })), refresh],
    ['reset: wiped and recorded, provisioned afresh', built(sliver({ reset_seq: 1 })), 'wipe 1, root+provision & link, define, lifecycle, limits'],
    ['reset of a new sliver: claimed, reset recorded', brandNew(sliver({ reset_seq: 2 })), 'claim, wipe 2, root+provision & link, define, lifecycle, limits'],
    ['watchdog restore: wiped (no reset recorded), provisioned afresh', built(sliver(), { restore: true, done: true, state: null }), 'wipe, root+provision & link, define, lifecycle, limits'],
    ['crash leftover: the ledger has the record, the host lost root and instance: provisioned again', built(sliver(), { hasRoot: false }), 'root+provision & link, define, lifecycle, limits'],
    ['crash leftover: root made but never provisioned (no image in the record): provisioned', built(sliver(), { record: record({ image_sha256: null, keys_hash: null }) }), 'root+provision & link, define, lifecycle, limits'],
    // The host, not what the agent wrote: live limits that are not the document's undo 'settled'.
    ['settled and unchanged, but its live memory limit is not the document\'s (killed between config and apply): built again, limits written last', built(sliver(), { done: true, drift: ['memory.limit_in_bytes'] }), refresh],
    ['settled and unchanged, live limits as asked: nothing', built(sliver(), { done: true, drift: [] }), 'none'],
    ['frozen as asked, its cpu cap drifted: built again (no thaw), limits written', built(sliver({ desired: 'frozen' }), { done: true, state: 'frozen', drift: ['cpu.cfs_quota_us'] }), refresh],
    ['settled, but its inbound rate cap is gone from its link: built again (the link step caps it)', built(sliver(), { done: true, drift: ['no inbound cap on plh0123456789ab'] }), refresh],
    ['crash leftover: a root and a container with no ledger record: claimed, provisioned again', brandNew(sliver(), { hasRoot: true }), 'claim, root+provision & link, define, lifecycle, limits'],
    // Warm pool (warm-pool.ts): a spare the registry handed out is adopted, never built anew.
    ['warm-pool spare handed out: adopted, its root provisioned for the slice, link (caps, ports), config, lifecycle, limits', built(sliver(), { record: record({ slice: '', spare: true, keys_hash: null }) }), 'adopt, root+provision & link & hostname, define, lifecycle, limits'],
    ['spare of an older image than the slice\'s: adopted, then a fresh root from the right image', built(sliver(), { record: record({ slice: '', spare: true, image_sha256: OTHER, keys_hash: null }) }), 'adopt, wipe, root+provision & link & hostname, define, lifecycle, limits'],
    ['spare handed out, then reset at once: adopted and wiped (reset recorded)', built(sliver({ reset_seq: 1 }), { record: record({ slice: '', spare: true, keys_hash: null }) }), 'adopt, wipe 1, root+provision & link & hostname, define, lifecycle, limits'],
    ['spare handed out for a VM sliver: not adopted, shown as failed', built(sliver({ kind: 'kvm' }), { record: record({ slice: '', spare: true }) }), 'wait'],
    ['spare handed out whose image is not here any more: fetched first', built(sliver(), { record: record({ slice: '', spare: true }), localImage: undefined, sliver: sliver({ image: { name: 'tiny', sha256: SHA, magnet: 'magnet:?xt=urn:btih:' + 'c'.repeat(40), web_seed: null } }) }), 'fetch'],
  ];
  for (const [what, facts, steps] of table) it(what, () => expect(plan(facts)).toBe(steps));

  // The lifecycle, from the state probed right after define and the ledger record.
  const rec = { restart_seq: 0, keys_hash: keysHash(KEYS) };
  const life: Array<[string, DesiredSliver, Pick<SliverRecord, 'restart_seq' | 'keys_hash'>, InstanceState, string, 'running' | 'stopped']> = [
    ['new (just defined): started; provisioning wrote the keys', sliver(), rec, 'stopped', 'start', 'running'],
    ['new, asked to be stopped: never started', sliver({ desired: 'stopped' }), rec, 'stopped', '', 'stopped'],
    ['new, asked to be frozen: started, then frozen', sliver({ desired: 'frozen' }), rec, 'stopped', 'start, freeze', 'stopped'],
    ['running as asked, changed resources: no restart', sliver(), rec, 'running', '', 'running'],
    ['restart: stopped, recorded, started', sliver({ restart_seq: 1 }), rec, 'running', 'stop, restarted 1, start', 'running'],
    ['restart of a stopped sliver: stopped again (a no-op), recorded, started', sliver({ restart_seq: 2 }), rec, 'stopped', 'stop, restarted 2, start', 'running'],
    ['restart asked while desired stopped: recorded, stopped', sliver({ desired: 'stopped', restart_seq: 1 }), rec, 'running', 'restarted 1, stop', 'stopped'],
    ['freeze a running sliver', sliver({ desired: 'frozen' }), rec, 'running', 'freeze', 'stopped'],
    ['thaw a frozen sliver', sliver(), rec, 'frozen', 'thaw', 'running'],
    ['frozen stays frozen', sliver({ desired: 'frozen' }), rec, 'frozen', '', 'stopped'],
    ['stop a running sliver', sliver({ desired: 'stopped' }), rec, 'running', 'stop', 'stopped'],
    ['stop a frozen sliver', sliver({ desired: 'stopped' }), rec, 'frozen', 'stop', 'stopped'],
    ['start a stopped (or crashed) sliver', sliver(), rec, 'stopped', 'start', 'running'],
    ['new keys for a running sliver: written from inside it', sliver({ keys: [...KEYS, 'ssh-ed25519 BBBB new@lab'] }), rec, 'running', 'keys', 'running'],
    ['new keys for a stopped sliver: left for when it runs', sliver({ desired: 'stopped', keys: [] }), rec, 'stopped', '', 'stopped'],
    ['new keys and a start: started, then the keys', sliver({ keys: [] }), rec, 'stopped', 'start, keys', 'running'],
  ];
  for (const [what, s, r, state, steps, ends] of life) {
    it(`lifecycle: ${what}`, () => {
      const lc = planLifecycle(s, r, state);
      expect(lc.steps.map((st) => (st.do === 'restarted' ? `restarted ${st.seq}` : st.do)).join(', ')).toBe(steps);
      expect(lc.ends).toBe(ends);
    });
  }

  it('shows a new sliver as provisioning while it is built, and builds it with the driver of its kind', () => {
    expect(planSliver(brandNew(sliver({ desired: 'frozen' })))).toMatchObject({ action: 'build', kind: 'lxc', sha256: SHA, fresh: true });
    expect(planSliver(built())).toMatchObject({ fresh: false });
    expect(planSliver(brandNew(sliver({ kind: 'kvm' })))).toMatchObject({ kind: 'kvm' });
  });

  it('seeds the image to other nodes when it came from the registry', () => {
    expect(planSliver(built(sliver({ image: { name: 'tiny', sha256: SHA, magnet: 'magnet:?xt=urn:btih:00', web_seed: null } })))).toMatchObject({ seed: true });
    expect(planSliver(built())).toMatchObject({ seed: false });
    expect(planSliver(built(sliver({ image: { name: 'tiny', sha256: SHA, magnet: 'magnet:?x', web_seed: null } }), { canFetch: false }))).toMatchObject({ seed: false });
  });

  const waits: Array<[string, SliverFacts, SliverPlan]> = [
    ['VM driver still probing: provisioning, waiting', brandNew(sliver({ kind: 'kvm' }), { readiness: { state: 'checking', why: 'waiting for the node to check that it can run VMs (accelerator probe)' } }),
      { action: 'wait', state: 'provisioning', error: 'waiting for the node to check that it can run VMs (accelerator probe)' }],
    ['VM driver off or failed its check: failed, with why', brandNew(sliver({ kind: 'kvm' }), { readiness: { state: 'off', why: 'this node cannot run kvm slivers: VM slivers are off' } }),
      { action: 'wait', state: 'failed', error: 'this node cannot run kvm slivers: VM slivers are off' }],
    ['image not yet here, no way to fetch it: waits for an import', brandNew(sliver(), { localImage: undefined }),
      { action: 'wait', state: 'provisioning', error: 'image tiny is not on this node yet (planetlite-agent image import NAME FILE)' }],
    ['image indexed but not in the pool: the same', brandNew(sliver(), { localImage: { sha256: SHA, stored: false }, canFetch: false }),
      { action: 'wait', state: 'provisioning', error: 'image tiny is not on this node yet (planetlite-agent image import NAME FILE)' }],
    ['image not yet here, published with a magnet: fetched', brandNew(sliver({ image: { name: 'tiny', sha256: SHA, magnet: 'magnet:?x', web_seed: 'http://r/x' } }), { localImage: undefined }),
      { action: 'fetch', image: { name: 'tiny', sha256: SHA, magnet: 'magnet:?x', webSeed: 'http://r/x' } }],
    ['a local image of the same name but another archive than the published one: fetched', built(sliver({ image: { name: 'tiny', sha256: OTHER, magnet: null, web_seed: 'http://r/x' } })),
      { action: 'fetch', image: { name: 'tiny', sha256: OTHER, magnet: null, webSeed: 'http://r/x' } }],
  ];
  for (const [what, facts, want] of waits) it(what, () => expect(planSliver(facts)).toEqual(want));

  it('says what a sliver waiting for its image shows', () => {
    expect(fetchStatus('tiny', undefined)).toEqual({ state: 'provisioning', error: 'fetching image tiny (0%)' });
    expect(fetchStatus('tiny', { state: 'fetching', error: null, progress: 0.426 })).toEqual({ state: 'provisioning', error: 'fetching image tiny (43%)' });
    expect(fetchStatus('tiny', { state: 'failed', error: 'checksum mismatch' })).toEqual({ state: 'failed', error: 'image tiny: checksum mismatch' });
  });
});

describe('the planner, a pass', () => {
  const A = '00000000-0000-4000-8000-00000000000a';
  const B = '00000000-0000-4000-8000-00000000000b';
  const doc = (slivers: DesiredSliver[]): DesiredState => ({ node_id: ID, address: '192.0.2.1', port_window: { first: 20000, last: 29999 }, slivers });
  const host = (instances: Array<[string, InstanceState]> = [], roots: string[] = [], links: string[] = []): HostView => ({
    instances: new Map(instances.map(([id, state]) => [id, { kind: 'lxc' as const, state }])), roots, links,
  });
  const a = sliver({ id: A });
  const b = sliver({ id: B, desired: 'stopped' });

  const table: Array<[string, DesiredState, HostView, SliverRecord[], Map<string, string>, { teardown: string[]; ensure: string[]; unchanged: number }]> = [
    ['new slivers: both worked on', doc([a, b]), host(), [], new Map(), { teardown: [], ensure: [A, B], unchanged: 0 }],
    ['settled and unchanged: no work', doc([a, b]), host([[A, 'running'], [B, 'stopped']], [A, B], [A, B]), [record({ id: A }), record({ id: B })], new Map([[A, docKey(a)], [B, docKey(b)]]), { teardown: [], ensure: [], unchanged: 2 }],
    ['unchanged document, instance no longer as left: worked on', doc([a]), host([[A, 'stopped']], [A], [A]), [record({ id: A })], new Map([[A, docKey(a)]]), { teardown: [], ensure: [A], unchanged: 0 }],
    ['changed document: worked on', doc([{ ...a, restart_seq: 1 }]), host([[A, 'running']], [A], [A]), [record({ id: A })], new Map([[A, docKey(a)]]), { teardown: [], ensure: [A], unchanged: 0 }],
    ['deleted: torn down', doc([{ ...a, desired: 'deleted' }]), host([[A, 'running']], [A], [A]), [record({ id: A })], new Map([[A, docKey(a)]]), { teardown: [A], ensure: [], unchanged: 0 }],
    ['no longer in the document: torn down', doc([]), host([[A, 'running']], [A], [A]), [record({ id: A })], new Map(), { teardown: [A], ensure: [], unchanged: 0 }],
    ['crash leftover: a container no record or document names', doc([]), host([[B, 'stopped']]), [], new Map(), { teardown: [B], ensure: [], unchanged: 0 }],
    ['crash leftover: a link no record or document names', doc([]), host([], [], [B]), [], new Map(), { teardown: [B], ensure: [], unchanged: 0 }],
    ['crash leftover: a subvolume no record or document names', doc([]), host([], [B], []), [], new Map(), { teardown: [B], ensure: [], unchanged: 0 }],
    ['crash leftover: a ledger record the host lacks, not wanted', doc([]), host(), [record({ id: A })], new Map(), { teardown: [A], ensure: [], unchanged: 0 }],
    ['crash leftover: a ledger record the host lacks, wanted: rebuilt', doc([a]), host(), [record({ id: A })], new Map([[A, docKey(a)]]), { teardown: [], ensure: [A], unchanged: 0 }],
    ['unchanged document, running, but its live limits drifted (a refused or never-applied write): worked on', doc([a, b]), { ...host([[A, 'running'], [B, 'stopped']], [A, B], [A, B]), drift: new Map([[A, 'memory.limit_in_bytes 134217728, not 100663296']]) }, [record({ id: A }), record({ id: B })], new Map([[A, docKey(a)], [B, docKey(b)]]), { teardown: [], ensure: [A], unchanged: 1 }],
  ];
  for (const [what, d, h, ledger, done, want] of table) {
    it(what, () => {
      const p = planPass(d, h, ledger, done);
      expect({ teardown: p.teardown, ensure: p.ensure.map((s) => s.id), unchanged: p.unchanged }).toEqual(want);
    });
  }

  it('carries the keys of unchanged parts over to a new document, and not those of changed ones', () => {
    const before = doc([a, b]);
    const done = new Map([[A, docKey(a)], [B, docKey(b)]]);
    // As the registry sends them: parsed afresh, keys in another order; B's keys changed.
    const parsed = (s: DesiredSliver) => JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(s).reverse()))) as DesiredSliver;
    const after = doc([parsed(a), parsed({ ...b, keys: [...KEYS, 'ssh-ed25519 AAAA new@lab'] })]);
    carryDocKeys(before, after);
    expect(docKey(after.slivers[0]!)).toBe(docKey(a));
    expect(docKey(after.slivers[1]!)).not.toBe(docKey(b));
    const p = planPass(after, host([[A, 'running'], [B, 'stopped']], [A, B], [A, B]), [record({ id: A }), record({ id: B })], done);
    expect({ ensure: p.ensure.map((s) => s.id), unchanged: p.unchanged }).toEqual({ ensure: [B], unchanged: 1 });
  });
});

describe('the planner, a teardown', () => {
  it('destroys the instance, rewrites the table, then link, root and last the ledger record', () => {
    expect(planTeardown({ state: 'ready' }, 'lxc')).toEqual({ action: 'teardown', steps: ['destroy', 'table', 'unlink', 'delete root', 'release'] });
  });
  it('has no instance to destroy when its kind cannot run here', () => {
    expect(planTeardown({ state: 'off', why: 'VM slivers are off' }, 'kvm')).toEqual({ action: 'teardown', steps: ['table', 'unlink', 'delete root', 'release'] });
  });
  it('waits when the container driver failed its check: a container of an earlier run may be up, unseen, on that root', () => {
    const why = 'this node cannot run lxc slivers: lxc driver: refusing to run slivers without their memory, cpu, pids limits';
    expect(planTeardown({ state: 'off', why }, 'lxc')).toEqual({ action: 'wait', error: `teardown: ${why}` });
  });
  it('waits while the driver of its kind is still being checked (an instance of an earlier run may be up)', () => {
    expect(planTeardown({ state: 'checking', why: 'waiting for the node to check that it can run VMs (accelerator probe)' }, 'kvm')).toEqual({ action: 'wait', error: 'teardown: waiting for the node to check that it can run VMs (accelerator probe)' });
  });
});
