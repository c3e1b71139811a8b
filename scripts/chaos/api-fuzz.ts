// A seeded fuzzer over every operation of the registry's /openapi.json: valid and mutated paths,
// queries, bodies and headers, sent over real HTTP by each kind of caller. It counts answers of
// 5xx, errors that are not problem+json of the shape API.md fixes, and refused writes that
// changed the database anyway. Used by apps/registry/test/fuzz.test.ts (a fixed budget) and
// scripts/chaos/fuzz-api.ts (longer runs with figures).
import { request as httpRequest, Agent } from 'node:http';
import { connect } from 'node:net';

/** mulberry32: small, fast and the same on every machine, so a seed replays a run exactly. */
export class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

export type Caller = 'admin' | 'pi' | 'user' | 'node' | 'anon';
export const CALLERS: Caller[] = ['admin', 'pi', 'user', 'node', 'anon'];

/** What the fuzzer knows of the world it runs in: the callers' credentials and ids that exist. */
export interface FuzzWorld {
  tokens: Record<Exclude<Caller, 'anon'>, string>;
  site: string;
  slice: string;
  sliver: string;
  node: string;
  user: string;
  /** An OpenSSH public key line the registry accepts. */
  sshKey: string;
}

export interface FuzzOptions {
  baseUrl: string;
  seed: number;
  requests: number;
  world: FuzzWorld;
  /** A fingerprint of everything a refused write must leave alone (see databaseFingerprint). */
  fingerprint: () => Promise<string>;
  /** Stop collecting examples of each kind after this many. */
  keepFindings?: number;
}

export interface Finding {
  kind: 'server_error' | 'not_problem' | 'changed_on_refusal' | 'transport';
  request: string;
  status: number;
  detail: string;
}

export interface FuzzReport {
  seed: number;
  requests: number;
  operations: number;
  statuses: Record<string, number>;
  serverErrors: number;
  notProblem: number;
  changedOnRefusal: number;
  transportErrors: number;
  refusedWritesChecked: number;
  /** Of seconds, how many went into fingerprints of the database. */
  fingerprintSeconds: number;
  secondsByOperation: Record<string, number>;
  findings: Finding[];
  seconds: number;
}

interface Operation {
  method: string;
  path: string;
  params: Array<{ in: string; name: string; schema: Schema; required?: boolean }>;
  body: { type: string; schema: Schema } | null;
}

type Schema = Record<string, any>;

/** Every operation of an OpenAPI 3 document. */
export function operationsOf(spec: { paths: Record<string, Record<string, any>> }): Operation[] {
  const ops: Operation[] = [];
  for (const [path, byMethod] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(byMethod)) {
      const content = op.requestBody?.content as Record<string, { schema: Schema }> | undefined;
      const [type, media] = Object.entries(content ?? {})[0] ?? [];
      ops.push({ method: method.toUpperCase(), path, params: op.parameters ?? [], body: type && media ? { type, schema: media.schema ?? {} } : null });
    }
  }
  return ops;
}

// ---- hostile values ---------------------------------------------------------------------------
const deep = (n: number): unknown => {
  let v: unknown = 'bottom';
  for (let i = 0; i < n; i++) v = i % 2 ? [v] : { d: v };
  return v;
};
const HOSTILE_STRINGS = [
  '', ' ', '\u0000', 'a\u0000b', '\ud800', 'x\udfff', '\ud83d', 'é', '\u202e', '😀'.repeat(50), '\n\r\t', "'; DROP TABLE sites; --",
  '%', '../../etc/passwd', 'x'.repeat(70), 'x'.repeat(5000), 'x'.repeat(70_000), '\\', '"', '<script>', 'null', '0', '-1',
];
const HOSTILE_NUMBERS = [-1, 0, 1, 0.5, -0.5, 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 1e300, -1e300, 1e-300, -(2 ** 63), 65536, 1023];
const HOSTILE_DATES = [
  '0000-01-01T00:00:00Z', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '9999-12-31T23:59:60Z', '1970-01-01T00:00:00+23:59',
  '2024-02-30T00:00:00Z', '2026-13-01T00:00:00Z', '2026-01-01t00:00:00z', '2026-01-01 00:00:00Z', '-000001-01-01T00:00:00Z',
  '+275760-09-13T00:00:00Z', '2026-06-01T00:00:00.123456789Z', '2026-06-01', '1900-01-01T00:00:00Z', '4714-11-24T00:00:00Z',
];
const uuidSpellings = (u: string) => [u.toUpperCase(), `{${u}}`, u.replace(/-/g, ''), `urn:uuid:${u}`, `${u}\n`, ` ${u}`, u.slice(0, 35), `${u}0`,
  '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff'];
const HOSTILE_SEGMENTS = ['%zz', '%', '%00', '%ff', '%c0%af', '%ed%a0%80', '..', '%2e%2e', '%2f', 'a%2Fb', '%e2%82%ac', '%20', '.', '%25', '~', '%F0%9F%98%80'];

function randomUuid(r: Prng): string {
  const h = () => r.int(0, 15).toString(16);
  const s = Array.from({ length: 32 }, h).join('');
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-4${s.slice(13, 16)}-a${s.slice(17, 20)}-${s.slice(20)}`;
}

function hostileValue(r: Prng, w: FuzzWorld): unknown {
  switch (r.int(0, 9)) {
    case 0: case 1: case 2: return r.pick(HOSTILE_STRINGS);
    case 3: case 4: return r.pick(HOSTILE_NUMBERS);
    case 5: return r.pick(HOSTILE_DATES);
    case 6: return r.pick(uuidSpellings(r.pick([w.node, w.sliver, w.user])));
    case 7: return r.pick([null, true, false, [], {}, [null], { '': 1 }, { __proto__: { admin: true } }, JSON.parse('{"__proto__":{"x":1}}'), { constructor: { prototype: { x: 1 } } }]);
    case 8: return deep(r.pick([20, 64, 200, 1000]));
    default: return r.pick(HOSTILE_STRINGS) + r.pick(HOSTILE_STRINGS);
  }
}

// ---- valid values -----------------------------------------------------------------------------
let serial = 0;
function validString(r: Prng, s: Schema, name: string, w: FuzzWorld): string {
  const n = `${Date.now().toString(36)}${++serial}`;
  if (s.enum) return r.pick(s.enum);
  if (s.format === 'uuid') return ({ user_id: w.user, node_id: w.node, sliver: w.sliver, sliver_id: w.sliver, node: w.node } as Record<string, string>)[name] ?? randomUuid(r);
  if (s.format === 'date-time') return new Date(Date.now() + r.int(-7, 40) * 86_400_000).toISOString();
  if (s.format === 'email') return `fz${n}@fuzz.test`;
  if (s.format === 'ipv4') return '192.0.2.77';
  if (s.format === 'ipv6') return '2001:db8::77';
  const pattern = String(s.pattern ?? '');
  if (pattern.startsWith('^[a-z][a-z0-9]{1,19}_')) return `${w.site}_fz${n}`.slice(0, 50);
  if (pattern.startsWith('^[a-z][a-z0-9]{1,19}$')) return name === 'login_base' && r.chance(0.3) ? `fz${n}`.slice(0, 20) : w.site;
  if (pattern.startsWith('^[A-Za-z0-9]([A-Za-z0-9-]')) return `fz${n}.test`;
  if (pattern.startsWith('^[a-z][a-z_]*\\.')) return r.pick(['watchdog.warning', 'fuzz.event', 'image.fetched']);
  if (pattern.startsWith('^(lxc|kvm)')) return r.pick(['lxc', 'kvm', 'lxc,kvm']);
  if (pattern.startsWith('^[a-z0-9][a-z0-9._-]')) return r.pick(['tiny', `fz${n}`]);
  if (pattern.startsWith('^[A-Za-z0-9][A-Za-z0-9._+~-]')) return '1.0';
  if (pattern.startsWith('^[a-z0-9_]{1,32}')) return 'x86_64';
  if (name === 'key') return w.sshKey;
  if (name === 'password') return 'password-123';
  if (name === 'url') return 'https://example.org/fuzz';
  const min = s.minLength ?? 1;
  const max = Math.min(s.maxLength ?? 40, 40);
  return 'fuzz-'.padEnd(Math.max(min, Math.min(max, r.int(min, max))), 'z').slice(0, Math.max(min, max));
}

function validValue(r: Prng, s: Schema, name: string, w: FuzzWorld, depth = 0): unknown {
  const branches = s.anyOf ?? s.oneOf;
  if (branches) return validValue(r, r.pick((branches as Schema[]).filter((b) => b.type !== 'null').concat(r.chance(0.1) ? branches : [])), name, w, depth);
  if (s.enum) return r.pick(s.enum);
  if (s.const !== undefined) return s.const;
  switch (s.type) {
    case 'string': return validString(r, s, name, w);
    case 'integer': {
      const lo = s.minimum ?? 0;
      const hi = Math.min(s.maximum ?? lo + 100, lo + 1000);
      return r.int(lo, hi);
    }
    case 'number': return (s.minimum ?? 0) + r.next() * Math.min(1, (s.maximum ?? 1) - (s.minimum ?? 0));
    case 'boolean': return r.chance(0.5);
    case 'null': return null;
    case 'array': {
      if (depth > 4) return [];
      const count = Math.max(s.minItems ?? 0, r.int(0, 2));
      const items = Array.from({ length: count }, () => validValue(r, s.items ?? {}, name, w, depth + 1));
      return s.uniqueItems ? [...new Map(items.map((i) => [JSON.stringify(i), i])).values()] : items;
    }
    case 'object':
    default: {
      if (depth > 4) return {};
      const out: Record<string, unknown> = {};
      const props = (s.properties ?? {}) as Record<string, Schema>;
      const required = new Set<string>(s.required ?? []);
      for (const [k, sub] of Object.entries(props)) if (required.has(k) || r.chance(0.4)) out[k] = validValue(r, sub, k, w, depth + 1);
      if (Object.keys(props).length === 0 && s.additionalProperties !== false && s.type === 'object') {
        for (let i = r.int(0, 3); i > 0; i--) out[`k${i}`] = r.pick([1, 'v', true, null, { n: 2 }, [1, 2]]);
      }
      if ((s.minProperties ?? 0) > Object.keys(out).length) {
        const [k, sub] = r.pick(Object.entries(props));
        out[k] = validValue(r, sub, k, w, depth + 1);
      }
      return out;
    }
  }
}

/** A path parameter that names something that exists, by the path it sits in. */
function validParam(r: Prng, path: string, name: string, schema: Schema, w: FuzzWorld): string {
  if (name === 'login_base') return w.site;
  if (name === 'name') return path.startsWith('/v1/images') ? 'tiny' : w.slice;
  if (name === 'sliver_id') return w.sliver;
  if (name === 'user_id') return w.user;
  if (name === 'id') {
    if (path.startsWith('/v1/nodes')) return w.node;
    if (path.startsWith('/v1/slivers')) return w.sliver;
    if (path.startsWith('/v1/users')) return r.chance(0.5) ? w.user : randomUuid(r);
  }
  return String(validValue(r, schema, name, w));
}

// ---- mutation ---------------------------------------------------------------------------------
/** Replaces one value somewhere inside a JSON value (or the value itself). */
function mutateJson(r: Prng, v: unknown, w: FuzzWorld, depth = 0): unknown {
  if (v !== null && typeof v === 'object' && depth < 6 && r.chance(0.75)) {
    if (Array.isArray(v)) {
      if (v.length === 0 || r.chance(0.2)) return [...v, hostileValue(r, w)];
      const i = r.int(0, v.length - 1);
      return v.map((x, j) => (j === i ? mutateJson(r, x, w, depth + 1) : x));
    }
    const keys = Object.keys(v);
    const out = { ...(v as Record<string, unknown>) };
    const roll = r.next();
    if (keys.length === 0 || roll < 0.1) out[r.pick(['extra', '__proto__', 'constructor', '', 'x'.repeat(300), '\u0000'])] = hostileValue(r, w);
    else if (roll < 0.2) delete out[r.pick(keys)];
    else {
      const k = r.pick(keys);
      out[k] = mutateJson(r, out[k], w, depth + 1);
    }
    return out;
  }
  return hostileValue(r, w);
}

/** encodeURIComponent that takes lone surrogates too: they go as the bytes of U+FFFD, as a client's UTF-8 would. */
function enc(v: string): string {
  try {
    return encodeURIComponent(v);
  } catch {
    return [...Buffer.from(v, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');
  }
}

function encodeSegment(r: Prng, v: string): string {
  // Raw hostile percent-encodings go as they are; everything else is encoded as a client would.
  // A few go raw when an HTTP client would send them so (printable ASCII without spaces).
  return HOSTILE_SEGMENTS.includes(v) || (/^[!-~]*$/.test(v) && r.chance(0.1)) ? v : enc(v);
}

interface Planned {
  op: Operation;
  caller: Caller;
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | Buffer | null;
  mutated: string[];
}

function plan(r: Prng, op: Operation, w: FuzzWorld): Planned {
  const caller = r.pick(CALLERS);
  const mutated: string[] = [];
  const mutate = (what: string, p: number) => {
    const yes = r.chance(p);
    if (yes) mutated.push(what);
    return yes;
  };
  // Destructive operations on the world's own objects would end the run's coverage early: their
  // "valid" targets are ids that do not exist.
  const destructive = op.method === 'DELETE' || /\/(logout|key|actions)$/.test(op.path);
  let path = op.path.replace(/\{([^}]+)\}/g, (_m, name: string) => {
    const schema = op.params.find((p) => p.in === 'path' && p.name === name)?.schema ?? { type: 'string' };
    if (mutate(`path.${name}`, 0.3)) {
      const roll = r.next();
      if (roll < 0.3) return r.pick(HOSTILE_SEGMENTS);
      if (roll < 0.4) return 'a'.repeat(r.pick([61, 101, 250, 600, 5000, 20_000]));
      if (roll < 0.7) return enc(r.pick(uuidSpellings(validParam(r, op.path, name, schema, w))));
      return encodeSegment(r, String(hostileValue(r, w)).slice(0, 3000));
    }
    const v = destructive ? (schema.format === 'uuid' ? randomUuid(r) : `${w.site}_gone`) : validParam(r, op.path, name, schema, w);
    return enc(v);
  });

  const query: string[] = [];
  for (const p of op.params.filter((x) => x.in === 'query')) {
    if (!p.required && !r.chance(0.4)) continue;
    let v: unknown = validValue(r, p.schema, p.name, w);
    if (p.name === 'wait') v = 0; // a long-poll would only spend the budget waiting
    if (mutate(`query.${p.name}`, 0.3)) {
      const raw = r.chance(0.3) ? r.pick([...HOSTILE_SEGMENTS, '1e20', '99999999999999999999', '-0', 'NaN', 'Infinity', '0x10', '1.5', '']) : null;
      query.push(`${enc(p.name)}=${raw ?? enc(String(hostileValue(r, w)).slice(0, 3000))}`);
      if (r.chance(0.2)) query.push(`${enc(p.name)}=${enc(String(v))}`);
    } else query.push(`${enc(p.name)}=${enc(String(v))}`);
  }
  if (mutate('query.unknown', 0.05)) query.push(`${r.pick(['zz', '__proto__', '%zz', 'a[b]', ''])}=${r.pick(['1', '%', '%00'])}`);
  if (query.length) path += `?${query.join('&')}`;

  const headers: Record<string, string> = {};
  const token = caller === 'anon' ? null : w.tokens[caller];
  if (token) headers.authorization = `Bearer ${token}`;
  // Logging out would end the caller's token for the rest of the run: log out a token of nobody's.
  if (token && op.path.endsWith('/logout')) headers.authorization = `Bearer plu_${randomUuid(r).replace(/-/g, '')}`;
  if (mutate('header.authorization', 0.04)) {
    headers.authorization = r.pick(['Bearer', 'Bearer ', 'Basic YWRtaW46YWRtaW4=', `Bearer ${'x'.repeat(5000)}`, 'Bearer plu_\u00ff', `bearer ${token ?? ''}`, `Bearer ${token ?? ''} extra`, 'Bearer %00']);
  }
  if (op.path.endsWith('/stream') && r.chance(0.3)) headers['last-event-id'] = r.pick(['0', '-1', '1e30', 'abc', '99999999999999999999', '5']);
  if (op.path.endsWith('/desired-state') && r.chance(0.3)) headers['if-none-match'] = r.pick(['"x"', '*', '', 'W/"1"']);
  if (r.chance(0.03)) headers.accept = r.pick(['text/html', '*/*', 'application/xml', '']);

  let body: string | Buffer | null = null;
  if (op.body) {
    headers['content-type'] = op.body.type;
    if (op.body.type === 'application/json') {
      let value = validValue(r, op.body.schema, 'body', w);
      if (mutate('body', 0.55)) value = mutateJson(r, value, w);
      body = JSON.stringify(value) ?? 'null';
      if (mutate('body.text', 0.08)) {
        body = r.pick([
          '', '{', '{"a":', 'nul', '[]', '"x"', '1e400', '{"a":1,"a":2}', '\u0000', '{"__proto__":{"admin":true}}',
          '['.repeat(100_000), `${'{"a":'.repeat(3000)}1${'}'.repeat(3000)}`, '\ufeff{}', `{"x":"${'\\ud800'}"}`,
        ]);
      }
    } else body = r.pick(['console line\n', 'x\u0000y', Buffer.from([0xe2, 0x82]).toString('latin1'), '']);
    if (mutate('header.content-type', 0.06)) {
      headers['content-type'] = r.pick(['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'multipart/form-data', 'application/jsonx', ';;', 'application/json; foo', 'APPLICATION/JSON']);
    }
    if (mutate('body.size', 0.02)) body = `{"pad":"${'x'.repeat(r.pick([2_000_000, 12_000_000]))}"}`;
  } else if (mutate('body.unexpected', 0.05)) {
    headers['content-type'] = r.pick(['application/json', 'text/plain', 'application/octet-stream']);
    body = r.pick(['{}', '{"a":1}', 'garbage', '{']);
  }
  if (op.path === '/v1/images' && op.method === 'POST') {
    headers['content-type'] = r.chance(0.8) ? 'application/octet-stream' : r.pick(['application/json', 'text/plain']);
    body = Buffer.from(Array.from({ length: r.int(0, 512) }, () => r.int(0, 255)));
  }
  return { op, caller, method: op.method, path, headers, body, mutated };
}

// ---- sending and checking ---------------------------------------------------------------------
interface Answer {
  status: number;
  type: string;
  text: string;
}

const agent = new Agent({ keepAlive: true, maxSockets: 1 });

function send(base: URL, p: Pick<Planned, 'method' | 'path' | 'headers' | 'body'>, streaming: boolean): Promise<Answer> {
  return new Promise((resolve, reject) => {
    // A body always with its length: without one, a GET's or HEAD's body would arrive as the next request.
    const headers = p.body === null ? p.headers : { ...p.headers, 'content-length': String(Buffer.byteLength(p.body)) };
    const req = httpRequest({ host: base.hostname, port: base.port, method: p.method, path: p.path, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      const type = String(res.headers['content-type'] ?? '');
      // An event stream stays open: read what comes within a moment, then hang up.
      const timer = streaming && res.statusCode === 200 ? setTimeout(() => req.destroy(), 150) : null;
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = () => {
        if (timer) clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, type, text: Buffer.concat(chunks).toString('utf8') });
      };
      res.on('end', done);
      res.on('close', done);
      res.on('error', () => done());
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    if (p.body !== null) req.end(p.body);
    else req.end();
  });
}

/** Bytes as they are, for what an HTTP client library refuses to send (bad request lines, headers). */
function sendRaw(base: URL, raw: string): Promise<Answer> {
  return new Promise((resolve) => {
    const sock = connect(Number(base.port), base.hostname);
    const chunks: Buffer[] = [];
    sock.setTimeout(10_000, () => sock.destroy());
    sock.on('data', (c) => {
      chunks.push(c);
      // One answer is all we want; the server closes after a client error anyway.
      if (Buffer.concat(chunks).includes('\r\n\r\n')) setTimeout(() => sock.destroy(), 50);
    });
    const finish = () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
      const type = /\r\ncontent-type: *([^\r\n]*)/i.exec(text)?.[1] ?? '';
      resolve({ status, type, text: text.split('\r\n\r\n').slice(1).join('\r\n\r\n') });
    };
    sock.on('close', finish);
    sock.on('error', () => undefined);
    sock.write(raw);
  });
}

/** Why an error answer does not have the problem+json shape of API.md, or null when it does. */
export function problemShapeFault(a: Answer, method = 'GET'): string | null {
  if (!/^application\/problem\+json\b/.test(a.type)) return `content-type '${a.type}'`;
  if (method === 'HEAD') return null; // the headers of the GET, no body
  let b: any;
  try {
    b = JSON.parse(a.text);
  } catch {
    return 'body is not JSON';
  }
  for (const k of ['type', 'title', 'detail', 'code']) if (typeof b?.[k] !== 'string') return `field ${k} missing`;
  if (b.status !== a.status) return `status field ${String(b.status)} ≠ ${a.status}`;
  if (/\n\s+at /.test(b.detail)) return 'detail carries a stack trace';
  return null;
}

const RAW_REQUESTS = [
  'GET /v1/sites/%zz HTTP/1.1\r\nHost: x\r\n\r\n',
  `GET /v1/slices/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
  `GET /v1/events?slice=${'b'.repeat(70_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
  `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'c'.repeat(20_000)}\r\n\r\n`,
  'GET /v1/sites with space HTTP/1.1\r\nHost: x\r\n\r\n',
  'GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n',
  'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}',
  'POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}',
  'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n',
  'BREW /v1/sites HTTP/1.1\r\nHost: x\r\n\r\n',
  'GET /v1/sites HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \x01\x02\r\n\r\n',
  '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03',
];

export async function fuzzApi(opts: FuzzOptions): Promise<FuzzReport> {
  const started = Date.now();
  const base = new URL(opts.baseUrl);
  const r = new Prng(opts.seed);
  const keep = opts.keepFindings ?? 20;
  const specAnswer = await send(base, { method: 'GET', path: '/openapi.json', headers: {}, body: null }, false);
  const ops = operationsOf(JSON.parse(specAnswer.text));
  const report: FuzzReport = {
    seed: opts.seed, requests: 0, operations: ops.length, statuses: {}, serverErrors: 0, notProblem: 0, changedOnRefusal: 0,
    transportErrors: 0, refusedWritesChecked: 0, fingerprintSeconds: 0, secondsByOperation: {}, findings: [], seconds: 0,
  };
  const counts = { server_error: 0, not_problem: 0, changed_on_refusal: 0, transport: 0 };
  const note = (f: Finding) => {
    counts[f.kind]++;
    if (report.findings.filter((x) => x.kind === f.kind).length < keep) report.findings.push(f);
  };
  const check = (label: string, a: Answer, method = 'GET') => {
    report.requests++;
    report.statuses[a.status] = (report.statuses[a.status] ?? 0) + 1;
    if (a.status >= 500 || a.status === 0) note({ kind: 'server_error', request: label, status: a.status, detail: a.text.slice(0, 300) });
    if (a.status >= 400 || a.status === 0) {
      const fault = problemShapeFault(a, method);
      if (fault) note({ kind: 'not_problem', request: label, status: a.status, detail: `${fault}: ${a.text.slice(0, 200)}` });
    }
  };

  // Requests an HTTP client library would not even send.
  for (const raw of RAW_REQUESTS) check(`raw ${JSON.stringify(raw.slice(0, 80))}`, await sendRaw(base, raw));

  let known: string | null = null;
  const fingerprint = async () => {
    const t0 = Date.now();
    const f = await opts.fingerprint();
    report.fingerprintSeconds += (Date.now() - t0) / 1000;
    return f;
  };
  for (let i = 0; report.requests < opts.requests; i++) {
    // Every operation in turn, in an order the seed shuffles each round, so each gets its share.
    const op = ops[(i % ops.length + Math.floor(i / ops.length) * 7919) % ops.length]!;
    const p = plan(r, op, opts.world);
    const label = `#${i} ${p.caller} ${p.method} ${p.path.slice(0, 200)} [${p.mutated.join(',')}]`;
    const write = p.method !== 'GET' && p.method !== 'HEAD';
    // A refused request changes nothing (that is the claim), so the fingerprint after one is the
    // one before the next: it is taken anew only after an answer that may have written.
    if (write && known === null) known = await fingerprint();
    const before = write ? known : null;
    let a: Answer;
    const t0 = Date.now();
    if (process.env.PLANETLITE_FUZZ_TRACE) console.error(label);
    try {
      a = await send(base, p, op.path.endsWith('/stream'));
      const key = `${op.method} ${op.path}`;
      report.secondsByOperation[key] = (report.secondsByOperation[key] ?? 0) + (Date.now() - t0) / 1000;
    } catch (err) {
      // The server hung up without an answer (a reset, a crash): as bad as a 5xx.
      note({ kind: 'transport', request: label, status: 0, detail: err instanceof Error ? err.message : String(err) });
      report.requests++;
      known = null;
      continue;
    }
    check(label, a, p.method);
    if (a.status < 400) known = null;
    if (op.path.endsWith('/stream') && a.status === 200 && !/^text\/event-stream/.test(a.type)) {
      note({ kind: 'not_problem', request: label, status: a.status, detail: `event stream answered ${a.type}` });
    }
    if (before !== null && a.status >= 400) {
      report.refusedWritesChecked++;
      const after = (known = await fingerprint());
      if (after !== before) note({ kind: 'changed_on_refusal', request: label, status: a.status, detail: `database changed: ${a.text.slice(0, 200)}` });
    }
  }
  report.serverErrors = counts.server_error;
  report.notProblem = counts.not_problem;
  report.changedOnRefusal = counts.changed_on_refusal;
  report.transportErrors = counts.transport;
  report.seconds = (Date.now() - started) / 1000;
  return report;
}

// ---- the database's fingerprint -----------------------------------------------------------------
export interface Queryable {
  query<T = any>(sql: string, params?: unknown[]): Promise<{ rows: T[] }>;
}

/**
 * Columns that change on every authenticated call (last use of a token, a node's last contact)
 * and say nothing about whether a refused request wrote anything.
 */
const VOLATILE = ['last_seen', 'last_used_at', 'last_seen_at', 'used_at'];

/** Tables only ever added to: their size and newest key say whether a request wrote to them. */
const APPEND_ONLY: Record<string, string> = { events: 'id', sliver_usage: 'at' };

/** One hash per table of every row, minus the volatile columns, in one round trip. */
export async function databaseFingerprint(db: Queryable): Promise<() => Promise<string>> {
  const { rows } = await db.query<{ t: string }>(
    "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name NOT LIKE '%migrations%' ORDER BY 1",
  );
  const minus = `ARRAY[${VOLATILE.map((c) => `'${c}'`).join(',')}]::text[]`;
  const sql = rows
    .map(({ t }) => APPEND_ONLY[t] ? `SELECT '${t}' AS t, count(*)::int AS n, coalesce(max(${APPEND_ONLY[t]})::text, '') AS h FROM "${t}"` : `SELECT '${t}' AS t, count(*)::int AS n, md5(coalesce(string_agg((to_jsonb(x) - ${minus})::text, ',' ORDER BY (to_jsonb(x) - ${minus})::text), '')) AS h FROM "${t}" x`)
    .join(' UNION ALL ');
  return async () => (await db.query<{ t: string; n: number; h: string }>(sql)).rows.map((x) => `${x.t}:${x.n}:${x.h}`).join(' ');
}

/** One line a person reads first: the figures of a run. */
export function summary(rep: FuzzReport): string {
  return `seed ${rep.seed}: ${rep.requests} requests over ${rep.operations} operations in ${rep.seconds.toFixed(1)} s (${rep.fingerprintSeconds.toFixed(1)} s of it checking the database); ` +
    `5xx ${rep.serverErrors}, errors not problem+json ${rep.notProblem}, refused writes that changed the database ${rep.changedOnRefusal} ` +
    `(of ${rep.refusedWritesChecked} checked), hang-ups ${rep.transportErrors}`;
}
