// Every change reaches its node while that node's long-polls come and go, and why a change can look
// lost without being lost: a change undone before the node polls again leaves the document (and
// its ETag) as the node already holds it. The fleet benchmark's 5,000-agent run counted such
// changes as "never reached their node" (docs/benchmarks.md).
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdMs } from '../src/routes/nodeside.js';
import { call, makeWorld, ok, testApp, type TestApp, type World } from './helpers.js';

let t: TestApp;
let w: World;

beforeAll(async () => {
  t = await testApp();
  w = await makeWorld(t.app, { maxSlivers: 100 });
});
afterAll(() => t.close());

interface Agent { id: string; key: string; etag: string | null; doc: any; stop: boolean }

async function enrollNode(i: number): Promise<{ node_id: string; node_key: string }> {
  const tok = await ok(t.app, 201, 'POST', `/v1/sites/${w.site}/enrollment-tokens`, w.admin, {});
  return ok(t.app, 201, 'POST', '/v1/nodes/enroll', null, {
    token: tok.token, hostname: `wake${i}.${w.site}.test`, address: `192.0.2.${100 + i}`,
    capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 2, memory_mb: 4096, disk_mb: 20000 },
  });
}

/** A node agent's loop: long-polls of `wait` seconds with its ETag, keeping the newest document. */
async function pollLoop(a: Agent, wait: number): Promise<void> {
  while (!a.stop) {
    const r = await call(t.app, 'GET', `/v1/nodes/${a.id}/desired-state?wait=${a.etag ? wait : 0}`, a.key, undefined, a.etag ? { 'if-none-match': a.etag } : {});
    if (r.status === 200) {
      a.doc = r.body;
      a.etag = r.headers.etag as string;
    } else if (r.status !== 304) throw new Error(`poll of ${a.id}: ${r.status} ${JSON.stringify(r.body)}`);
  }
}

async function until(cond: () => boolean, what: string): Promise<void> {
  // A bound so that a lost change fails the test instead of hanging it; not a speed target.
  const deadline = Date.now() + 60_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('desired-state long-polls', () => {
  it("answer 304 when nothing changed, at the node's own moment of each wait cycle", async () => {
    // Held exactly ?wait=S, polls let go together (a stopped event loop, a fleet's reconnect)
    // would come back together every S seconds for good; each node's polls end at its own moment.
    const nodes = [{ id: w.ids.node, key: w.node }];
    for (let i = 0; i < 5; i++) {
      const n = await enrollNode(20 + i);
      nodes.push({ id: n.node_id, key: n.node_key });
    }
    const etags = await Promise.all(nodes.map(async (n) => String((await call(t.app, 'GET', `/v1/nodes/${n.id}/desired-state`, n.key)).headers.etag)));
    const poll = async (i: number, delayMs: number) => {
      await new Promise((r) => setTimeout(r, delayMs));
      const t0 = Date.now();
      const r = await call(t.app, 'GET', `/v1/nodes/${nodes[i]!.id}/desired-state?wait=2`, nodes[i]!.key, undefined, { 'if-none-match': etags[i]! });
      expect(r.status).toBe(304);
      const end = Date.now();
      expect(end - t0).toBeLessThan(2000 + 150);
      return end;
    };
    // Six nodes' polls started together, and the first node's polls started 0.7 s and 1.3 s later.
    const [together, later] = await Promise.all([
      Promise.all(nodes.map((_n, i) => poll(i, 0))),
      Promise.all([700, 1300].map((d) => poll(0, d))),
    ]);
    // One node's polls end at one moment of the 2 s cycle, whenever they began.
    for (const end of later) {
      const apart = (end - together[0]!) % 2000;
      expect(Math.min(apart, 2000 - apart)).toBeLessThan(100);
    }
    // The nodes' moments differ: six polls begun together do not end within 200 ms of each other.
    expect(Math.max(...together) - Math.min(...together)).toBeGreaterThan(200);
  });

  it("hold a poll until its node's moment: never over the wait, and the moments spread over it", () => {
    const moments = new Array<number>(10).fill(0);
    const apart = (a: number, b: number) => Math.min(Math.abs(a - b), 25_000 - Math.abs(a - b));
    for (let i = 0; i < 1000; i++) {
      const id = randomUUID();
      const now = 1_780_000_000_000 + Math.floor(Math.random() * 1e9);
      const ends = [0, 1, 3_333, 12_345, 24_000].flatMap((step) => {
        const hold = holdMs(id, 25, now + step);
        expect(hold).toBeGreaterThanOrEqual(250);
        expect(hold).toBeLessThanOrEqual(25_000);
        // A poll just before its node's moment is held the whole cycle; the others end at it.
        return hold === 25_000 ? [] : [(now + step + hold) % 25_000];
      });
      expect(ends.length).toBeGreaterThanOrEqual(3);
      for (const end of ends) expect(apart(end, ends[0]!)).toBeLessThan(0.01);
      moments[Math.floor(ends[0]! / 2_500)]!++;
    }
    // A thousand nodes: every tenth of the cycle holds 60-140 of their moments (uniform: 100).
    for (const m of moments) {
      expect(m).toBeGreaterThan(60);
      expect(m).toBeLessThan(140);
    }
  });

  it('bring every change to its node while polls end and start again all the time', async () => {
    const slice = `${w.site}_wake`;
    await ok(t.app, 201, 'POST', '/v1/slices', w.pi, { name: slice, description: 'wake-ups', url: 'https://example.org' });
    const agents: Agent[] = [];
    const sliverOf = new Map<string, string>();
    for (let i = 0; i < 8; i++) {
      const n = await enrollNode(i);
      const s = await ok(t.app, 202, 'POST', `/v1/slices/${slice}/slivers`, w.pi, { node_id: n.node_id });
      sliverOf.set(n.node_id, s.id);
      agents.push({ id: n.node_id, key: n.node_key, etag: null, doc: null, stop: false });
    }
    // One-second waits: every node's poll ends and subscribes anew many times during the changes.
    const loops = agents.map((a) => pollLoop(a, 1));
    try {
      await until(() => agents.every((a) => a.doc), 'every node holds its first document');
      let arrived = 0;
      // Per node, one change after another, each made only once the last one arrived (no change is
      // undone before its node saw it); the nodes' changes run side by side.
      await Promise.all(agents.map(async (a, i) => {
        const sliver = sliverOf.get(a.id)!;
        for (let round = 0; round < 6; round++) {
          // Spread the changes over the poll cycle, so some land just as a poll ends.
          await new Promise((r) => setTimeout(r, (i * 37 + round * 113) % 400));
          const want = round % 2 === 0 ? 'stopped' : 'running';
          await ok(t.app, 202, 'POST', `/v1/slivers/${sliver}/actions`, w.pi, { action: want === 'stopped' ? 'stop' : 'start' });
          await until(() => a.doc.slivers.find((s: any) => s.id === sliver)?.desired === want, `node ${a.id} gets ${want} (round ${round})`);
          arrived++;
        }
      }));
      expect(arrived).toBe(agents.length * 6);
    } finally {
      for (const a of agents) a.stop = true;
      await Promise.all(loops);
    }
    // Every node ends holding exactly what the registry serves.
    for (const a of agents) {
      const now = await call(t.app, 'GET', `/v1/nodes/${a.id}/desired-state`, a.key);
      expect(now.headers.etag).toBe(a.etag);
    }
  }, 120_000);

  it('give a node no new document for a change undone before it polled again: nothing is lost', async () => {
    const first = await call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node);
    const sliver = first.body.slivers[0];
    expect(sliver.desired).toBe('running');
    await ok(t.app, 202, 'POST', `/v1/slivers/${sliver.id}/actions`, w.pi, { action: 'stop' });
    await ok(t.app, 202, 'POST', `/v1/slivers/${sliver.id}/actions`, w.pi, { action: 'start' });
    // The node holds the latest desired state already: 304, the same ETag.
    const again = await call(t.app, 'GET', `/v1/nodes/${w.ids.node}/desired-state`, w.node, undefined, { 'if-none-match': first.headers.etag as string });
    expect(again.status).toBe(304);
    expect(again.headers.etag).toBe(first.headers.etag);
  });

  it("answer 304 with no body and no length, so that a node's connection lives on from poll to poll", async () => {
    // A 304 that announced a body (the 4 bytes of `null`) made undici — the agent's HTTP client —
    // drop the connection after every long-poll that timed out: a new TLS handshake per poll.
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = t.app.server.address() as AddressInfo;
    const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
    let connects = 0;
    const dropped: string[] = [];
    pool.on('connect', () => connects++);
    pool.on('disconnect', (_o, _t, err: Error & { code?: string }) => dropped.push(err.code ?? err.message));
    try {
      const first = await pool.request({ method: 'GET', path: `/v1/nodes/${w.ids.node}/desired-state`, headers: { authorization: `Bearer ${w.node}` } });
      await first.body.dump();
      for (const wait of [0, 1]) {
        const res = await pool.request({ method: 'GET', path: `/v1/nodes/${w.ids.node}/desired-state?wait=${wait}`, headers: { authorization: `Bearer ${w.node}`, 'if-none-match': first.headers.etag as string } });
        expect(res.statusCode).toBe(304);
        expect(res.headers['content-length']).toBeUndefined();
        await res.body.dump();
      }
      expect({ connects, dropped }).toEqual({ connects: 1, dropped: [] });
    } finally {
      await pool.close();
    }
  });
});
