// A typed client for the v1 API, shared by the CLI, the node agent and the tests.
import type * as S from './schemas.js';
import { SLIVER_CONSOLE_MAX_BYTES } from './constants.js';

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: S.Problem;

  constructor(problem: S.Problem) {
    super(problem.detail || problem.title);
    this.name = 'ApiError';
    this.status = problem.status;
    this.code = problem.code;
    this.problem = problem;
  }
}

export interface ClientOptions {
  /** Base URL of the registry, e.g. http://127.0.0.1:8080 */
  registry: string;
  /** A user token from login, or a node key. */
  token?: string | undefined;
  fetch?: typeof fetch;
  /** A request fails when its answer, body included, is not in after this long (absent: no
   * limit; the node agent sets one, so that a registry that hangs cannot stall it). */
  timeoutMs?: number;
  /** The largest answer body read (default 64 MiB): a registry that answers without end cannot fill memory. */
  maxBodyBytes?: number;
  /** Sent with every request: a browser session sends the CSRF header (CSRF_HEADER) here. */
  headers?: Record<string, string>;
}

const MAX_BODY_BYTES = 64 * 1024 * 1024;

type Query = Record<string, string | number | undefined>;
interface RequestOptions {
  body?: unknown;
  /** A text/plain body (UTF-8) instead of a JSON one. */
  text?: string;
  query?: Query;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Added to the client's timeout (a long-poll's wait). */
  extraMs?: number;
}

export interface DesiredStateResult {
  /** null when the registry answered 304: nothing changed since etag. */
  state: S.DesiredState | null;
  etag: string | null;
  /** The document as the registry sent it (JSON text), when it sent one: a node keeps a copy of
   * it on disk, and writing the text saves serialising the document again. */
  text?: string;
}

export class PlanetLiteClient {
  readonly registry: string;
  token: string | undefined;
  readonly #fetch: typeof fetch;
  readonly #timeoutMs: number | undefined;
  readonly #maxBody: number;
  readonly #headers: Record<string, string>;

  constructor(opts: ClientOptions) {
    this.registry = opts.registry.replace(/\/+$/, '');
    this.token = opts.token;
    // A browser's fetch must be called unbound from window, never as a method of this client.
    const f = opts.fetch ?? fetch;
    this.#fetch = (input, init) => f(input, init);
    this.#headers = opts.headers ?? {};
    this.#timeoutMs = opts.timeoutMs;
    this.#maxBody = opts.maxBodyBytes ?? MAX_BODY_BYTES;
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.raw(method, path, opts);
    if (res.status === 204) return undefined as T;
    return this.#json<T>(res, `${method} ${path}`);
  }

  /** The answer's body as JSON, read up to maxBodyBytes; one clear line when it is not that. */
  async #json<T>(res: Response, what: string): Promise<T> {
    return (await this.#jsonAndText<T>(res, what)).value;
  }

  /** The body parsed, and as received. */
  async #jsonAndText<T>(res: Response, what: string): Promise<{ value: T; text: string }> {
    let text: string;
    try {
      text = await boundedText(res, this.#maxBody);
    } catch (err) {
      throw new Error(`${what}: ${reason(err, this.#timeoutMs)}`);
    }
    try {
      return { value: JSON.parse(text) as T, text };
    } catch {
      throw new Error(`${what}: the registry answered ${res.status} with a body that is not JSON (${JSON.stringify(text.slice(0, 80))})`);
    }
  }

  /** Sends a request and throws ApiError for any answer of 400 or more. */
  async raw(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const url = new URL(this.registry + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json', ...this.#headers, ...opts.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let body: string | undefined;
    if (opts.text !== undefined) {
      headers['content-type'] = 'text/plain; charset=utf-8';
      body = opts.text;
    } else if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const init: RequestInit = { method, headers };
    if (body !== undefined) init.body = body;
    const timeout = this.#timeoutMs === undefined ? undefined : this.#timeoutMs + (opts.extraMs ?? 0);
    const signals = [opts.signal, timeout === undefined ? undefined : AbortSignal.timeout(timeout)].filter((x): x is AbortSignal => x !== undefined);
    if (signals.length) init.signal = signals.length === 1 ? signals[0]! : AbortSignal.any(signals);
    let res: Response;
    try {
      res = await this.#fetch(url, init);
    } catch (err) {
      if (opts.signal?.aborted || !isTimeout(err)) throw err;
      throw new Error(`${method} ${path}: ${reason(err, timeout)}`);
    }
    if (res.status >= 400) throw new ApiError(await problemOf(res));
    return res;
  }

  // auth and users
  async login(email: string, password: string): Promise<S.LoginResponse> {
    const out = await this.request<S.LoginResponse>('POST', '/v1/auth/login', { body: { email, password } });
    this.token = out.token;
    return out;
  }
  /**
   * A browser session: the registry sets an httpOnly cookie that this client never sees, and
   * answers without the token. Build the client with headers {[CSRF_HEADER]: CSRF_HEADER_VALUE}.
   */
  loginSession(email: string, password: string): Promise<S.LoginResponse> {
    return this.request<S.LoginResponse>('POST', '/v1/auth/login', { body: { email, password, cookie: true } });
  }
  /** Ends the caller's own token. */
  logout() { return this.request<void>('POST', '/v1/auth/logout'); }
  /** Ends every token of a user (admin, or the user themself). */
  revokeUserTokens(userId: string) { return this.request<S.TokensRevoked>('DELETE', `/v1/users/${enc(userId)}/tokens`); }
  me() { return this.request<S.User>('GET', '/v1/users/me'); }
  listUsers(query: { site?: string } = {}) { return this.request<{ users: S.User[] }>('GET', '/v1/users', { query }).then((r) => r.users); }
  getUser(id: string) { return this.request<S.User>('GET', `/v1/users/${enc(id)}`); }
  createUser(body: S.UserCreate) { return this.request<S.User>('POST', '/v1/users', { body }); }
  addKey(userId: string, key: string) { return this.request<S.SshKey>('POST', `/v1/users/${enc(userId)}/keys`, { body: { key } }); }
  listKeys(userId: string) { return this.request<{ keys: S.SshKey[] }>('GET', `/v1/users/${enc(userId)}/keys`).then((r) => r.keys); }
  deleteKey(userId: string, keyId: string) { return this.request<void>('DELETE', `/v1/users/${enc(userId)}/keys/${enc(keyId)}`); }

  // sites
  listSites() { return this.request<{ sites: S.Site[] }>('GET', '/v1/sites').then((r) => r.sites); }
  getSite(loginBase: string) { return this.request<S.Site>('GET', `/v1/sites/${enc(loginBase)}`); }
  createSite(body: S.SiteCreate) { return this.request<S.Site>('POST', '/v1/sites', { body }); }
  updateSite(loginBase: string, body: S.SitePatch) { return this.request<S.Site>('PATCH', `/v1/sites/${enc(loginBase)}`, { body }); }
  createEnrollmentToken(loginBase: string, body: S.EnrollmentTokenCreate = {}) {
    return this.request<S.EnrollmentToken>('POST', `/v1/sites/${enc(loginBase)}/enrollment-tokens`, { body });
  }

  // nodes
  enroll(body: S.EnrollRequest) { return this.request<S.EnrollResponse>('POST', '/v1/nodes/enroll', { body }); }
  /** all: also decommissioned nodes. */
  listNodes(query: { site?: string; all?: boolean } = {}) {
    return this.request<{ nodes: S.Node[] }>('GET', '/v1/nodes', { query: { site: query.site, all: query.all ? 'true' : undefined } }).then((r) => r.nodes);
  }
  getNode(id: string) { return this.request<S.Node>('GET', `/v1/nodes/${enc(id)}`); }
  /** Sets where a node stands, or clears it with location: null (its site's tech or pi, admin). */
  updateNode(id: string, body: S.NodePatch) { return this.request<S.Node>('PATCH', `/v1/nodes/${enc(id)}`, { body }); }
  /** drain, undrain or decommission a node (its site's tech or pi, admin). */
  nodeAction(id: string, action: S.NodeAction['action'], opts: { force?: boolean } = {}) {
    return this.request<S.Node>('POST', `/v1/nodes/${enc(id)}/actions`, { body: { action, ...(opts.force ? { force: true } : {}) } });
  }
  /** Revokes a node's key at once (its site's tech or pi, admin); the node must enroll again. */
  revokeNodeKey(id: string) { return this.request<S.Node>('DELETE', `/v1/nodes/${enc(id)}/key`); }
  /** A new key for this node (node key): the old one works until the new one is first used. */
  rotateNodeKey(id: string) { return this.request<S.NodeKey>('POST', `/v1/nodes/${enc(id)}/key`); }
  listEnrollmentTokens(loginBase: string) {
    return this.request<{ tokens: S.EnrollmentTokenInfo[] }>('GET', `/v1/sites/${enc(loginBase)}/enrollment-tokens`).then((r) => r.tokens);
  }
  deleteEnrollmentToken(loginBase: string, id: string) { return this.request<void>('DELETE', `/v1/sites/${enc(loginBase)}/enrollment-tokens/${enc(id)}`); }

  // images
  listImages() { return this.request<{ images: S.Image[] }>('GET', '/v1/images').then((r) => r.images); }
  getImage(name: string) { return this.request<S.Image>('GET', `/v1/images/${enc(name)}`); }
  /**
   * Uploads an image archive (admin): streams body without buffering it. size becomes the
   * Content-Length (the registry refuses an oversized upload before reading it); sha256 (hex) is
   * checked by the registry, which keeps nothing on a mismatch; onProgress hears of every chunk
   * handed to the connection. Give a signal for large files: there is no timeout of its own.
   */
  async uploadImage(
    manifest: S.ImageUploadQuery,
    body: AsyncIterable<Uint8Array>,
    opts: { size?: number; sha256?: string; onProgress?: (sentBytes: number) => void; signal?: AbortSignal } = {},
  ): Promise<S.Image> {
    const url = new URL(`${this.registry}/v1/images`);
    for (const [k, v] of Object.entries(manifest)) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json', 'content-type': 'application/octet-stream', ...this.#headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (opts.size !== undefined) headers['content-length'] = String(opts.size);
    if (opts.sha256) headers['x-content-sha256'] = opts.sha256;
    const source = body[Symbol.asyncIterator]();
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const next = await source.next();
        if (next.done) return controller.close();
        sent += next.value.byteLength;
        controller.enqueue(next.value);
        opts.onProgress?.(sent);
      },
      async cancel(reason) {
        await source.return?.(reason);
      },
    });
    // duplex 'half': a streamed request body (fetch's own option, missing from older DOM typings).
    const init: RequestInit & { duplex: 'half' } = { method: 'POST', headers, body: stream, duplex: 'half' };
    if (opts.signal) init.signal = opts.signal;
    const res = await this.#fetch(url, init);
    if (res.status >= 400) throw new ApiError(await problemOf(res));
    return this.#json<S.Image>(res, `POST /v1/images`);
  }

  // slices
  listSlices(query: { site?: string } = {}) { return this.request<{ slices: S.Slice[] }>('GET', '/v1/slices', { query }).then((r) => r.slices); }
  getSlice(name: string) { return this.request<S.Slice>('GET', `/v1/slices/${enc(name)}`); }
  createSlice(body: S.SliceCreate) { return this.request<S.Slice>('POST', '/v1/slices', { body }); }
  updateSlice(slice: string, body: S.SlicePatch) { return this.request<S.Slice>('PATCH', `/v1/slices/${enc(slice)}`, { body }); }
  addMember(slice: string, userId: string) { return this.request<S.Slice>('POST', `/v1/slices/${enc(slice)}/members`, { body: { user_id: userId } }); }
  removeMember(slice: string, userId: string) { return this.request<S.Slice>('DELETE', `/v1/slices/${enc(slice)}/members/${enc(userId)}`); }
  renewSlice(slice: string, expiresAt: string) { return this.request<S.Slice>('POST', `/v1/slices/${enc(slice)}/renew`, { body: { expires_at: expiresAt } }); }
  deleteSlice(slice: string) { return this.request<S.Slice>('DELETE', `/v1/slices/${enc(slice)}`); }

  // slivers
  createSliver(slice: string, nodeId: string) { return this.request<S.Sliver>('POST', `/v1/slices/${enc(slice)}/slivers`, { body: { node_id: nodeId } }); }
  listSlivers(slice: string) { return this.request<{ slivers: S.Sliver[] }>('GET', `/v1/slices/${enc(slice)}/slivers`).then((r) => r.slivers); }
  getSliver(id: string) { return this.request<S.Sliver>('GET', `/v1/slivers/${enc(id)}`); }
  sliverAction(id: string, action: S.SliverAction['action']) { return this.request<S.Sliver>('POST', `/v1/slivers/${enc(id)}/actions`, { body: { action } }); }
  deleteSliver(id: string) { return this.request<S.Sliver>('DELETE', `/v1/slivers/${enc(id)}`); }
  /** The sliver's accounting samples, oldest first; since defaults to 24 hours ago, until to now. */
  sliverUsage(id: string, query: S.UsageQuery = {}) { return this.request<S.UsageHistory>('GET', `/v1/slivers/${enc(id)}/usage`, { query }); }
  /** The tail of the sliver's console as its node last uploaded it; ApiError not_found until the node has uploaded one. */
  getSliverConsole(id: string) { return this.request<S.SliverConsole>('GET', `/v1/slivers/${enc(id)}/console`); }

  // events
  listEvents(query: Partial<S.EventQuery> = {}) {
    const { newest, ...rest } = query;
    return this.request<S.EventList>('GET', '/v1/events', { query: { ...rest, newest: newest ? 'true' : undefined } }).then((r) => r.events);
  }

  /** Follows the Server-Sent Events stream, calling onEvent for each event until signal aborts. */
  async streamEvents(query: { slice?: string | undefined; node?: string | undefined; type?: string | undefined; after?: number | undefined }, onEvent: (e: S.Event) => void, signal?: AbortSignal): Promise<void> {
    const res = await this.raw('GET', '/v1/events/stream', { query, headers: { accept: 'text/event-stream' }, ...(signal ? { signal } : {}) });
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (data) onEvent(JSON.parse(data) as S.Event);
        }
      }
    } catch (err) {
      if (!signal?.aborted) throw err;
    }
  }

  // node side (authenticated with the node key)
  async desiredState(nodeId: string, opts: { etag?: string | null; wait?: number; signal?: AbortSignal } = {}): Promise<DesiredStateResult> {
    const headers: Record<string, string> = {};
    if (opts.etag) headers['if-none-match'] = opts.etag;
    const res = await this.raw('GET', `/v1/nodes/${enc(nodeId)}/desired-state`, {
      headers,
      query: { wait: opts.wait },
      ...(opts.signal ? { signal: opts.signal } : {}),
      extraMs: (opts.wait ?? 0) * 1000,
    });
    const etag = res.headers.get('etag');
    if (res.status === 304) return { state: null, etag: etag ?? opts.etag ?? null };
    const { value, text } = await this.#jsonAndText<S.DesiredState>(res, 'GET desired-state');
    return { state: value, etag, text };
  }
  putObservedState(nodeId: string, body: S.ObservedState) { return this.request<{ ok: true }>('PUT', `/v1/nodes/${enc(nodeId)}/observed-state`, { body }); }
  postNodeEvent(nodeId: string, body: S.NodeEventCreate) { return this.request<S.Event>('POST', `/v1/nodes/${enc(nodeId)}/events`, { body }); }
  /**
   * Replaces the stored console log of a sliver on this node. text must fit SLIVER_CONSOLE_MAX_BYTES
   * as UTF-8, else ApiError payload_too_large (413): cut it with consoleTail() first.
   */
  putSliverConsole(nodeId: string, sliverId: string, text: string) {
    return this.request<S.SliverConsoleReceipt>('PUT', `/v1/nodes/${enc(nodeId)}/slivers/${enc(sliverId)}/console`, { text });
  }
}

const enc = encodeURIComponent;

/**
 * The longest end of text that fits maxBytes as UTF-8, starting on a whole character. A tail read
 * by bytes can start inside a character, which decodes to U+FFFD and so can grow past the limit.
 */
export function consoleTail(text: string, maxBytes: number = SLIVER_CONSOLE_MAX_BYTES): string {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length <= maxBytes) return text;
  let start = bytes.length - maxBytes;
  while (start < bytes.length && (bytes[start]! & 0xc0) === 0x80) start++; // a UTF-8 continuation byte
  return new TextDecoder().decode(bytes.subarray(start));
}

function isTimeout(err: unknown): boolean {
  return err instanceof Error && (err.name === 'TimeoutError' || (err.name === 'AbortError' && (err.cause as Error | undefined)?.name === 'TimeoutError'));
}

function reason(err: unknown, timeoutMs: number | undefined): string {
  if (isTimeout(err)) return `the registry did not answer within ${Math.round((timeoutMs ?? 0) / 1000)} s`;
  return err instanceof Error ? err.message : String(err);
}

/** A body as text, refused past max bytes (the rest is not read). */
async function boundedText(res: Response, max: number): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`the registry's answer of ${declared} bytes is larger than ${max}`);
  }
  if (!res.body) return '';
  // TextDecoder, not Buffer: the dashboard runs this client in a browser.
  const decoder = new TextDecoder();
  let text = '';
  let size = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`the registry's answer is larger than ${max} bytes`);
    }
    text += decoder.decode(value, { stream: true });
  }
  return text + decoder.decode();
}

async function problemOf(res: Response): Promise<S.Problem> {
  const text = await boundedText(res, 64 * 1024).catch((err: unknown) => (err instanceof Error ? err.message : String(err)));
  try {
    const p = JSON.parse(text) as Partial<S.Problem>;
    if (typeof p.code === 'string') {
      return { type: p.type ?? 'about:blank', title: p.title ?? res.statusText, status: p.status ?? res.status, detail: p.detail ?? '', code: p.code };
    }
  } catch {
    // not JSON: fall through to a problem made from the status line
  }
  return { type: 'about:blank', title: res.statusText, status: res.status, detail: text.slice(0, 500) || res.statusText, code: `http_${res.status}` };
}
