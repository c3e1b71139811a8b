// Fault campaign against the registry and its services, bounded, printing its figures:
//  1. the registry SIGKILLed every few seconds while several clients write (on PGlite, and on a
//     PostgreSQL server that flushes) → every 2xx answer is in the database afterwards, and
//     retries make no duplicates;
//  2. PostgreSQL restarted under the same load → the registry answers 503 problem+json with
//     Retry-After meanwhile and recovers by itself, in the same process;
//  3. Redis stopped → a node's long-poll still gets every change (the registry looks at the
//     database while its fan-out is down), logins fail closed; Redis back → normal.
//
//   node scripts/chaos/registry.ts [--kills 20] [--clients 4] [--json]
//
// Idempotency: the API has no idempotency key. Every write here names its object (a site's
// login_base, unique in the database), and a client that got no answer sends the same request
// again: a 409 on such a retry means the first attempt committed, so a retry can never add a
// second row. Runs with Node 24's TypeScript support after `npm run build`.
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openDatabase } from '@planetlite/db';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../../test/harness/services.ts';
import { startRegistryProcess, type RegistryProcess } from '../../test/harness/registry-process.ts';

const ADMIN = { email: 'chaos@planetlite.test', password: 'chaos-password' };
const adminEnv = { PLANETLITE_ADMIN_EMAIL: ADMIN.email, PLANETLITE_ADMIN_PASSWORD: ADMIN.password };

export type Log = (line: string) => void;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : NaN);

interface Answer {
  status: number;
  type: string;
  retryAfter: string | null;
  body: Record<string, unknown> | null;
}

/** One HTTP call; throws when no answer came (refused, cut, timed out). */
async function call(url: string, method: string, token: string | null, body?: unknown, headers: Record<string, string> = {}, timeoutMs = 10_000): Promise<Answer> {
  const res = await fetch(url, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? null : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> | null = null;
  try {
    parsed = text ? (JSON.parse(text) as Record<string, unknown>) : null;
  } catch {
    parsed = null;
  }
  return { status: res.status, type: res.headers.get('content-type') ?? '', retryAfter: res.headers.get('retry-after'), body: parsed };
}

async function login(base: string): Promise<string> {
  const a = await call(`${base}/v1/auth/login`, 'POST', null, ADMIN);
  if (a.status !== 200) throw new Error(`admin login answered ${a.status}`);
  return String(a.body?.token);
}

/** What the writing clients saw. */
export interface WriteFigures {
  /** Names whose creation was answered 2xx (or 409 on a retry: an earlier attempt committed). */
  acknowledged: Set<string>;
  ackedByRetry: number;
  /** Requests sent again after no answer or a 503. */
  retries: number;
  answers503: number;
  /** 503s without problem+json or without Retry-After. */
  bad503: number;
  /** Any other answer ≥ 400 (a 409 on a first attempt, a 500). */
  unexpected: string[];
  /** Time of each 2xx answer (ms since epoch), to find recovery. */
  okTimes: number[];
}

/**
 * Several clients creating sites as fast as they are answered, against whatever registry
 * url() returns at the moment. stop() lets each finish the name it is on (retrying until answered).
 */
export function startWriters(clients: number, url: () => string, token: () => string): { figures: WriteFigures; stop(): Promise<void> } {
  const figures: WriteFigures = { acknowledged: new Set(), ackedByRetry: 0, retries: 0, answers503: 0, bad503: 0, unexpected: [], okTimes: [] };
  let stopping = false;
  const writer = async (c: number) => {
    for (let seq = 0; !stopping; seq++) {
      const name = `k${c}x${seq}`;
      for (let attempt = 1; ; attempt++) {
        let a: Answer;
        try {
          a = await call(`${url()}/v1/sites`, 'POST', token(), { login_base: name, name: `chaos ${name}`, max_slices: 1, max_slivers: 1 });
        } catch {
          figures.retries++;
          await sleep(50);
          continue;
        }
        if (a.status === 201 || (a.status === 409 && attempt > 1)) {
          figures.acknowledged.add(name);
          figures.okTimes.push(Date.now());
          if (a.status === 409) figures.ackedByRetry++;
          break;
        }
        if (a.status === 503) {
          figures.answers503++;
          if (!a.type.startsWith('application/problem+json') || !a.retryAfter || typeof a.body?.code !== 'string') figures.bad503++;
          figures.retries++;
          await sleep(100);
          continue;
        }
        if (a.status === 401) {
          // A registry killed mid-restart can have refused a token it had not yet read; never seen, but retry.
          figures.retries++;
          await sleep(100);
          continue;
        }
        figures.unexpected.push(`${name}: ${a.status} ${String(a.body?.code ?? '')}`);
        break;
      }
    }
  };
  const running = Array.from({ length: clients }, (_, c) => writer(c));
  return {
    figures,
    async stop() {
      stopping = true;
      await Promise.all(running);
    },
  };
}

/** Compares what the clients were told with what the database holds. */
async function audit(db: { url?: string; dataDir?: string }, figures: WriteFigures) {
  const database = await openDatabase(db);
  try {
    const { rows } = await database.query<{ login_base: string; name: string }>("SELECT login_base, name FROM sites WHERE login_base ~ '^k[0-9]+x[0-9]+$'");
    const stored = new Set(rows.map((r) => r.login_base));
    const byName = new Map<string, number>();
    for (const r of rows) byName.set(r.name, (byName.get(r.name) ?? 0) + 1);
    const lost = [...figures.acknowledged].filter((n) => !stored.has(n));
    return {
      acknowledged: figures.acknowledged.size,
      found: figures.acknowledged.size - lost.length,
      lost,
      // The same write stored twice: rows per (non-unique) display name.
      duplicates: [...byName.values()].filter((n) => n > 1).length,
      storedUnacknowledged: rows.length - (figures.acknowledged.size - lost.length),
    };
  } finally {
    await database.close();
  }
}

export interface KillFigures {
  database: 'pglite' | 'postgres';
  kills: number;
  clients: number;
  acknowledged: number;
  found: number;
  lost: string[];
  duplicates: number;
  storedUnacknowledged: number;
  retries: number;
  ackedByRetry: number;
  unexpected: string[];
  /** From SIGKILL to the new process answering /healthz. */
  recoveryMs: { median: number; max: number };
}

/** The registry SIGKILLed `kills` times, every killEveryMs (a random time in the range), under writes. */
export async function killCampaign(o: { database: 'pglite' | 'postgres'; pgUrl?: string; kills: number; clients: number; killEveryMs?: [number, number]; log?: Log }): Promise<KillFigures> {
  const log = o.log ?? (() => undefined);
  const [lo, hi] = o.killEveryMs ?? [1_500, 3_500];
  const dataDir = mkdtempSync(join(tmpdir(), 'pl-chaos-'));
  const env: Record<string, string> = { ...adminEnv, ...(o.pgUrl ? { DATABASE_URL: o.pgUrl } : { PLANETLITE_DATA_DIR: dataDir }) };
  let reg: RegistryProcess | undefined;
  try {
    reg = await startRegistryProcess(env, { timeoutMs: 180_000 });
    const token = await login(reg.url);
    let base = reg.url;
    const writers = startWriters(o.clients, () => base, () => token);
    const recovery: number[] = [];
    for (let k = 1; k <= o.kills; k++) {
      await sleep(lo + Math.random() * (hi - lo));
      const t0 = Date.now();
      const exited = once(reg.proc, 'exit');
      reg.proc.kill('SIGKILL');
      await exited;
      reg = await startRegistryProcess(env, { timeoutMs: 180_000 });
      base = reg.url;
      recovery.push(Date.now() - t0);
      log(`  ${o.database}: kill ${k}/${o.kills}, back in ${recovery.at(-1)} ms, ${writers.figures.acknowledged.size} writes acknowledged so far`);
    }
    await sleep(500);
    await writers.stop();
    await reg.stop();
    const f = writers.figures;
    const result = await audit(o.pgUrl ? { url: o.pgUrl } : { dataDir }, f);
    return {
      database: o.database,
      kills: o.kills,
      clients: o.clients,
      ...result,
      retries: f.retries,
      ackedByRetry: f.ackedByRetry,
      unexpected: f.unexpected,
      recoveryMs: { median: median(recovery), max: Math.max(...recovery) },
    };
  } finally {
    if (reg && reg.proc.exitCode === null && reg.proc.signalCode === null) reg.proc.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export interface RestartFigures {
  downMs: number;
  acknowledged: number;
  lost: string[];
  duplicates: number;
  answers503: number;
  bad503: number;
  unexpected: string[];
  /** From PostgreSQL accepting connections again to the registry's next 2xx answer. */
  recoveryMs: number;
  /** The registry process ran throughout (it recovered by itself). */
  sameProcess: boolean;
}

/** PostgreSQL stopped (fast: connections cut) for downMs and started again while clients write. */
export async function postgresRestart(o: { server: PostgresServer; clients: number; downMs: number; log?: Log }): Promise<RestartFigures> {
  const log = o.log ?? (() => undefined);
  const url = await o.server.createDatabase('chaos_restart');
  const reg = await startRegistryProcess({ ...adminEnv, DATABASE_URL: url }, { timeoutMs: 180_000 });
  try {
    const token = await login(reg.url);
    const writers = startWriters(o.clients, () => reg.url, () => token);
    await sleep(1_000);
    log(`  restarting PostgreSQL (down ${o.downMs} ms)`);
    await o.server.restart(o.downMs);
    const up = Date.now();
    while (!writers.figures.okTimes.some((t) => t >= up)) await sleep(20);
    const recoveryMs = Math.min(...writers.figures.okTimes.filter((t) => t >= up)) - up;
    await sleep(1_000);
    await writers.stop();
    const sameProcess = reg.proc.exitCode === null && reg.proc.signalCode === null;
    const f = writers.figures;
    const result = await audit({ url }, f);
    log(`  back ${recoveryMs} ms after PostgreSQL, ${f.answers503} answers of 503 meanwhile`);
    return { downMs: o.downMs, acknowledged: result.acknowledged, lost: result.lost, duplicates: result.duplicates, answers503: f.answers503, bad503: f.bad503, unexpected: f.unexpected, recoveryMs, sameProcess };
  } finally {
    await reg.stop();
  }
}

export interface RedisFigures {
  changes: number;
  /** Changes a waiting long-poll answered before its own timeout, while Redis was down. */
  deliveredDown: number;
  deliveryDownMs: { median: number; max: number };
  /** Logins tried while Redis was down, and how many were let in (fail closed: 0). */
  loginsDown: number;
  loginsLetIn: number;
  loginAnswersDown: string[];
  /** From Redis back to the first login answered 200. */
  loginBackMs: number;
  deliveredAfter: number;
  deliveryAfterMs: { median: number; max: number };
  longPollWaitSeconds: number;
}

/**
 * A node long-polls its desired state (wait=50 s, as the agent does) while slivers are added for
 * it; Redis is stopped, more are added, logins tried; Redis is started again on its port.
 */
export async function redisOutage(o: { pgUrl: string; redis: RedisServer; changes: number; log?: Log }): Promise<RedisFigures> {
  const log = o.log ?? (() => undefined);
  const WAIT = 50;
  let redis = o.redis;
  const reg = await startRegistryProcess({ ...adminEnv, DATABASE_URL: o.pgUrl, REDIS_URL: redis.url }, { timeoutMs: 180_000 });
  const closing = new AbortController();
  try {
    const base = reg.url;
    const token = await login(base);
    const must = async (a: Promise<Answer>, status: number) => {
      const r = await a;
      if (r.status !== status) throw new Error(`expected ${status}, got ${r.status} ${JSON.stringify(r.body)}`);
      return r.body as Record<string, unknown>;
    };
    await must(call(`${base}/v1/sites`, 'POST', token, { login_base: 'rsite', name: 'Redis outage', max_slices: 100, max_slivers: 100 }), 201);
    const enrollToken = await must(call(`${base}/v1/sites/rsite/enrollment-tokens`, 'POST', token, {}), 201);
    const node = await must(call(`${base}/v1/nodes/enroll`, 'POST', null, {
      token: enrollToken.token, hostname: 'node1.rsite.test', address: '192.0.2.10',
      capabilities: { lxc: true, kvm: false, kvm_accel: null }, resources: { cpus: 2, memory_mb: 4096, disk_mb: 20000 },
    }), 201);
    const nodeId = String(node.node_id);
    const nodeKey = String(node.node_key);

    // The node: long-polls, noting when each sliver first shows up and whether the poll was woken.
    const seen = new Map<string, { at: number; woken: boolean }>();
    let etag: string | null = null;
    const poller = (async () => {
      while (!closing.signal.aborted) {
        const started = Date.now();
        try {
          const res = await fetch(`${base}/v1/nodes/${nodeId}/desired-state?wait=${WAIT}`, {
            headers: { authorization: `Bearer ${nodeKey}`, ...(etag ? { 'if-none-match': etag } : {}) },
            signal: closing.signal,
          });
          if (res.status === 200) {
            etag = res.headers.get('etag');
            const doc = (await res.json()) as { slivers: { id: string }[] };
            for (const s of doc.slivers) if (!seen.has(s.id)) seen.set(s.id, { at: Date.now(), woken: Date.now() - started < WAIT * 1000 - 1_000 });
          } else await res.arrayBuffer();
        } catch {
          if (!closing.signal.aborted) await sleep(200);
        }
      }
    })();
    await sleep(300);

    let made = 0;
    const change = async () => {
      const slice = `rsite_s${++made}`;
      await must(call(`${base}/v1/slices`, 'POST', token, { name: slice, description: 'outage', url: 'https://example.org/x' }), 201);
      const sliver = await must(call(`${base}/v1/slices/${slice}/slivers`, 'POST', token, { node_id: nodeId }), 202);
      return { id: String(sliver.id), at: Date.now() };
    };
    const delivered = async (made: { id: string; at: number }[]) => {
      const deadline = Date.now() + (WAIT + 5) * 1000;
      while (made.some((m) => !seen.has(m.id)) && Date.now() < deadline) await sleep(50);
      const times = made.filter((m) => seen.get(m.id)?.woken).map((m) => seen.get(m.id)!.at - m.at);
      return { count: times.length, ms: { median: median(times), max: times.length ? Math.max(...times) : NaN } };
    };

    await delivered([await change()]); // warm: the poll is subscribed and waiting
    log('  stopping Redis');
    const port = redis.port;
    await redis.stop();
    await sleep(500);
    const down: { id: string; at: number }[] = [];
    const loginAnswers: string[] = [];
    for (let i = 0; i < o.changes; i++) {
      down.push(await change());
      const a = await call(`${base}/v1/auth/login`, 'POST', null, ADMIN);
      loginAnswers.push(`${a.status} ${String(a.body?.code ?? '')}`.trim());
      await sleep(700);
    }
    const downDelivery = await delivered(down);
    log(`  ${downDelivery.count}/${o.changes} changes reached the node with Redis down; logins answered ${[...new Set(loginAnswers)].join(', ')}`);

    log('  starting Redis again');
    redis = await startRedis({ port });
    const back = Date.now();
    let loginBackMs = NaN;
    while (Date.now() - back < 30_000) {
      const a = await call(`${base}/v1/auth/login`, 'POST', null, ADMIN);
      if (a.status === 200) {
        loginBackMs = Date.now() - back;
        break;
      }
      await sleep(100);
    }
    await sleep(500);
    const after: { id: string; at: number }[] = [];
    for (let i = 0; i < o.changes; i++) {
      after.push(await change());
      await sleep(300);
    }
    const afterDelivery = await delivered(after);
    return {
      changes: o.changes,
      deliveredDown: downDelivery.count,
      deliveryDownMs: downDelivery.ms,
      loginsDown: loginAnswers.length,
      loginsLetIn: loginAnswers.filter((a) => a.startsWith('200')).length,
      loginAnswersDown: [...new Set(loginAnswers)],
      loginBackMs,
      deliveredAfter: afterDelivery.count,
      deliveryAfterMs: afterDelivery.ms,
      longPollWaitSeconds: WAIT,
    };
  } finally {
    closing.abort();
    await reg.stop();
    if (redis !== o.redis) await redis.stop();
  }
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({ options: { kills: { type: 'string', default: '20' }, clients: { type: 'string', default: '4' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', default: false } } });
  if (args.help) {
    console.log(`usage: node scripts/chaos/registry.ts [--kills N] [--clients N] [--json]

The registry's fault campaign (docs/reliability.md, Registry): N SIGKILLs of a child registry under
writes from N clients, on PGlite and on a PostgreSQL server with fsync on; a PostgreSQL restart
under load; Redis stopped and started again. Prints the figures (--json: as JSON). Needs the build
(npm run build) and Debian's postgresql and redis-server (scripts/setup.sh).
  --kills N     SIGKILLs per database (default 20)
  --clients N   concurrent writing clients (default 4)
  --json        print the figures as JSON only`);
    return;
  }
  const kills = Number(args.kills);
  const clients = Number(args.clients);
  if (!Number.isInteger(kills) || kills < 1 || !Number.isInteger(clients) || clients < 1) {
    console.error('chaos/registry: --kills and --clients take whole numbers of at least 1');
    process.exit(2);
  }
  const log: Log = args.json ? () => undefined : (l) => console.log(l);
  const started = Date.now();
  const pg = await startPostgres({ durable: true });
  const redis = await startRedis();
  try {
    log(`registry SIGKILLed ${kills} times under ${clients} writing clients, on PGlite`);
    const pglite = await killCampaign({ database: 'pglite', kills, clients, log });
    log(`… and on PostgreSQL (fsync on)`);
    const postgres = await killCampaign({ database: 'postgres', pgUrl: await pg.createDatabase('chaos_kill'), kills, clients, log });
    log('PostgreSQL restarted under load');
    const restart = await postgresRestart({ server: pg, clients, downMs: 3_000, log });
    log('Redis stopped and started again');
    const outage = await redisOutage({ pgUrl: await pg.createDatabase('chaos_redis'), redis, changes: 5, log });
    const figures = { pglite, postgres, restart, outage, seconds: Math.round((Date.now() - started) / 1000) };
    if (args.json) {
      console.log(JSON.stringify(figures, null, 2));
      return;
    }
    for (const k of [pglite, postgres]) {
      console.log(
        `${k.database}: ${k.kills} kills, ${k.acknowledged} writes acknowledged, ${k.found} found, ${k.lost.length} lost, ${k.duplicates} duplicates ` +
          `(${k.retries} retries, ${k.ackedByRetry} acknowledged by a 409 on retry, ${k.storedUnacknowledged} stored but never answered, ${k.unexpected.length} unexpected answers); ` +
          `back after a kill in ${k.recoveryMs.median} ms median, ${k.recoveryMs.max} ms max`,
      );
    }
    console.log(
      `PostgreSQL restart (down ${restart.downMs} ms): ${restart.answers503} answers of 503 (${restart.bad503} without problem+json and Retry-After), ` +
        `${restart.unexpected.length} other errors, registry's next 2xx ${restart.recoveryMs} ms after PostgreSQL was back, same process: ${restart.sameProcess}; ` +
        `${restart.acknowledged} writes acknowledged, ${restart.lost.length} lost, ${restart.duplicates} duplicates`,
    );
    console.log(
      `Redis down: ${outage.deliveredDown}/${outage.changes} changes woke the node's long-poll (wait ${outage.longPollWaitSeconds} s) in ${outage.deliveryDownMs.median} ms median, ${outage.deliveryDownMs.max} ms max; ` +
        `${outage.loginsLetIn}/${outage.loginsDown} logins let in (answers: ${outage.loginAnswersDown.join(', ')}); ` +
        `Redis back: login 200 after ${outage.loginBackMs} ms, ${outage.deliveredAfter}/${outage.changes} changes in ${outage.deliveryAfterMs.median} ms median`,
    );
    console.log(`campaign took ${figures.seconds} s`);
  } finally {
    await redis.stop();
    await pg.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`chaos/registry: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    },
  );
}
