// The ssh front door: one ssh2 server on the node's address. The login name is the slice
// (`root+SLICE` for the sliver's root); a member's key lets the user in, and every channel is
// relayed to the sliver's own sshd over its private link, so the user lands in the sliver exactly
// as through its forwarded port, and 'localhost' means the sliver. It never runs anything here.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import ssh2 from 'ssh2';
import type { AuthContext, ClientChannel, Connection, ParsedKey, PseudoTtyInfo, ServerChannel, Session } from 'ssh2';
import { fingerprintOf } from './keys.js';
import { Spares, type SliverLogin, type SpareKey } from './spares.js';
import { FailureCounter } from './throttle.js';

/** One sliver the front door can let users into. */
export interface FrontDoorEntry {
  slice: string;
  sliver: string;
  /** The sliver's private address (its sshd listens on port 22 there). */
  address: string;
  /** Every slice member's OpenSSH public key lines. */
  keys: string[];
}

export interface LoginEvent {
  slice: string;
  sliver: string;
  user: string;
  key_fingerprint: string;
  source: string;
  how: 'front-door';
}

export interface FrontDoorLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  debug(fields: object, msg: string): void;
}

export interface FrontDoorServerOptions {
  hostKey: string;
  /** The key the slivers' authorized_keys accept from the node's end of their link. */
  clientKey: string;
  log: FrontDoorLog;
  onLogin: (ev: LoginEvent) => void;
  /** A connection not logged in after this long is closed (default 30 s). */
  loginGraceMs?: number;
  /** Connections not yet logged in, at most: from one source, and in all (defaults 16 and 256). */
  maxPendingPerSource?: number;
  maxPending?: number;
}

/**
 * Ciphers both legs offer: AES (GCM, then CTR), which Node runs with the CPU's AES instructions.
 * Not chacha20-poly1305, OpenSSH's first choice: without ssh2's optional native module its
 * Poly1305 runs in WebAssembly and the front door spent twice the CPU per byte (measured:
 * 1.25 s against 0.58 s for a 64 MiB scp upload). OpenSSH then picks aes128-ctr with
 * hmac-sha2-256-etm, about as cheap here as aes128-gcm.
 */
const CIPHERS = ['aes128-gcm@openssh.com', 'aes256-gcm@openssh.com', 'aes128-ctr', 'aes192-ctr', 'aes256-ctr'] as ssh2.CipherAlgorithm[];

// A refused user reads ssh's own 'Permission denied (publickey).': the same for an unknown
// slice, a key that is no member's and a slice with no sliver here, so it tells an attacker nothing.

interface Entry extends FrontDoorEntry {
  parsed: ParsedKey[];
}

/** A TCP connection not logged in yet: admitted against the caps, closed when its grace ends. */
interface Admitted {
  source: string;
  socket: Socket;
  /** When it was accepted (performance.now()): the start of the login's timing. */
  at: number;
  /** Ends its pending state (logged in, or closed); idempotent. */
  settle(): void;
}

export class FrontDoorServer {
  readonly #o: FrontDoorServerOptions;
  /** Takes the TCP connections; ssh2 gets those admitted (ssh2 itself sees a connection only
   * once the client has sent its version line, too late to count half-open ones). */
  readonly #tcp: Server;
  readonly #ssh: ssh2.Server;
  #table = new Map<string, Entry>();
  /** Each key line of the table, parsed (null: not a key ssh2 reads): a new table parses only the
   * lines the last one did not hold (a node of 2,000 slivers gets a table at every change). */
  #keys = new Map<string, ParsedKey | null>();
  readonly #failures = new FailureCounter();
  readonly #pending = new Map<string, number>();
  #pendingTotal = 0;
  /** Admitted sockets by `address:port`, until ssh2 reports them as a connection. */
  readonly #admitted = new Map<string, Admitted>();
  readonly #sockets = new Set<Socket>();
  readonly #spares = new Spares((key) => this.#connectSliver(key));

  constructor(opts: FrontDoorServerOptions) {
    this.#o = opts;
    this.#ssh = new ssh2.Server({ hostKeys: [opts.hostKey], ident: 'PlanetLite_front_door', algorithms: { cipher: CIPHERS } }, (conn, info) => this.#connection(conn, info.ip, info.port));
    this.#ssh.on('error', (err: Error) => opts.log.warn({ err: err.message }, 'front door server error'));
    // No Nagle: a login is a dozen small request/answer packets, each otherwise held for the
    // peer's delayed ACK (about 40 ms a round).
    this.#tcp = createServer({ noDelay: true }, (socket) => this.#admit(socket));
  }

  /** The slivers users may enter, from the agent's desired state and ledger. */
  setTable(entries: FrontDoorEntry[]): void {
    const table = new Map<string, Entry>();
    const keys = new Map<string, ParsedKey | null>();
    for (const e of entries) {
      const parsed: ParsedKey[] = [];
      for (const line of e.keys) {
        let key: ParsedKey | null | undefined = keys.has(line) ? keys.get(line) : this.#keys.get(line);
        if (key === undefined) {
          const k = ssh2.utils.parseKey(line);
          key = k instanceof Error ? null : Array.isArray(k) ? (k[0] ?? null) : k;
        }
        keys.set(line, key ?? null);
        if (key) parsed.push(key);
      }
      table.set(e.slice, { ...e, parsed });
    }
    this.#keys = keys;
    this.#table = table;
    this.#spares.retain(entries);
  }


  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.#tcp.once('error', onError);
      this.#tcp.listen(port, host, () => {
        this.#tcp.off('error', onError);
        this.#tcp.on('error', (err: Error) => this.#o.log.warn({ err: err.message }, 'front door listener error'));
        resolve((this.#tcp.address() as AddressInfo).port);
      });
    });
  }

  async close(): Promise<void> {
    this.#spares.close();
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#tcp.close(() => resolve()));
  }

  #admit(socket: Socket): void {
    const source = socket.remoteAddress ?? '?';
    socket.on('error', () => {});
    const perSource = this.#pending.get(source) ?? 0;
    // Too many connections not logged in: this one goes at once, before any crypto work.
    if (perSource >= (this.#o.maxPendingPerSource ?? 16) || this.#pendingTotal >= (this.#o.maxPending ?? 256)) {
      this.#o.log.debug({ source }, 'too many connections not logged in: dropped');
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    this.#pending.set(source, perSource + 1);
    this.#pendingTotal++;
    const key = `${source}:${socket.remotePort}`;
    let pending = true;
    const grace = setTimeout(() => socket.destroy(), this.#o.loginGraceMs ?? 30_000);
    const settle = () => {
      if (!pending) return;
      pending = false;
      clearTimeout(grace);
      this.#admitted.delete(key);
      this.#pendingTotal--;
      const n = (this.#pending.get(source) ?? 1) - 1;
      if (n > 0) this.#pending.set(source, n);
      else this.#pending.delete(source);
    };
    socket.once('close', () => {
      settle();
      this.#sockets.delete(socket);
    });
    this.#admitted.set(key, { source, socket, settle, at: performance.now() });
    this.#ssh.injectSocket(socket);
  }

  #connection(conn: Connection, source: string, port: number): void {
    const admitted = this.#admitted.get(`${source}:${port}`);
    // Milliseconds from the TCP accept to each step of the login (logged at debug): where a
    // slow login spends its time (docs/benchmarks.md has a breakdown).
    const t0 = admitted?.at ?? performance.now();
    const phases: Record<string, number | string> = {};
    const mark = (step: string) => void (phases[step] ??= Math.round(performance.now() - t0));
    conn.on('handshake', (negotiated) => {
      mark('kex');
      phases.cipher = negotiated.cs.cipher;
    });
    const settle = () => admitted?.settle();
    let upstream: ssh2.Client | null = null;
    conn.on('error', (err: Error) => this.#o.log.debug({ source, err: err.message }, 'front door connection error'));
    let gone = false;
    conn.on('close', () => {
      gone = true;
      settle();
      upstream?.end();
    });
    conn.on('authentication', (ctx) => {
      mark(`auth_${ctx.method}${ctx.method === 'publickey' ? (ctx.signature ? '_signed' : '_query') : ''}`);
      void this.#authenticate(ctx, source, conn, mark).then((login) => {
        if (!login) return;
        mark('sliver_ready');
        // The user left while the sliver's login was being made: it is no one's.
        if (gone) return void login.upstream.end();
        upstream = login.upstream;
        settle();
        this.#failures.forget(source);
        this.#o.onLogin(login.event);
        this.#o.log.info({ ...login.event }, 'login');
        conn.once('ready', () => {
          mark('ready');
          this.#relay(conn, login.upstream, login.entry, () => {
            if (phases.channel !== undefined) return;
            mark('channel');
            this.#o.log.debug({ slice: login.event.slice, ms: phases }, 'login phases');
          });
        });
        ctx.accept();
      });
    });
  }

  /** The login and the sliver's sshd connection, or null when refused (already answered). */
  async #authenticate(ctx: AuthContext, source: string, conn: Connection, mark: (k: string) => void): Promise<{ entry: Entry; upstream: ssh2.Client; event: LoginEvent } | null> {
    const refuse = async () => {
      const delay = this.#failures.fail(source);
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      ctx.reject(['publickey']);
      return null;
    };
    if (ctx.method !== 'publickey') {
      // 'none' is how every client starts: answered at once, not counted.
      if (ctx.method === 'none') {
        ctx.reject(['publickey']);
        return null;
      }
      return refuse();
    }
    const root = ctx.username.startsWith('root+');
    const slice = root ? ctx.username.slice('root+'.length) : ctx.username;
    const entry = this.#table.get(slice);
    const user = root ? 'root' : slice;
    // The node's login to the sliver starts now, beside the user's (it is handed over only once
    // the user has proved a member's key; at most one is made ahead per sliver and account).
    const spareKey: SpareKey | null = entry ? { sliver: entry.sliver, address: entry.address, user } : null;
    if (spareKey) this.#spares.warm(spareKey);
    const key = entry?.parsed.find((k) => k.getPublicSSH().equals(ctx.key.data));
    if (!entry || !key) return refuse();
    // The first ask is whether the key would do; the signed one proves the user holds it.
    if (!ctx.signature) {
      ctx.accept();
      return null;
    }
    if (key.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) return refuse();
    mark('auth_ok');
    const upstream = await this.#spares.take(spareKey!).then((login) => {
      login.bind(conn);
      return login.client;
    }, (err: unknown) => {
      this.#o.log.warn({ slice, sliver: entry.sliver, err: err instanceof Error ? err.message : String(err) }, 'the sliver does not answer ssh');
      return null;
    });
    if (!upstream) {
      ctx.reject(['publickey']);
      return null;
    }
    const event: LoginEvent = { slice, sliver: entry.sliver, user, key_fingerprint: fingerprintOf(ctx.key.data), source, how: 'front-door' };
    return { entry, upstream, event };
  }

  #connectSliver(key: SpareKey): Promise<SliverLogin> {
    return new Promise((resolve, reject) => {
      const c = new ssh2.Client();
      const agent = new UserAgent();
      c.on('connect', () => c.setNoDelay(true));
      c.once('ready', () => resolve({ client: c, bind: (owner) => agent.bind(owner as Connection) }));
      c.once('error', reject);
      c.on('error', () => {});
      c.connect({
        host: key.address,
        port: 22,
        username: key.user,
        privateKey: this.#o.clientKey,
        // Only the node's key logs in; the user's agent (when forwarded) serves the sliver's sshd.
        authHandler: ['publickey'],
        algorithms: { cipher: CIPHERS },
        // No agentForward here: ssh2 would then ask it for every channel; shell() and exec() ask
        // for it when the user did (forwardAgent).
        agent,
        readyTimeout: 15_000,
        keepaliveInterval: 30_000,
        // The sliver's end of a private link on this node: only that sliver can answer there.
        hostVerifier: () => true,
      });
    });
  }

  /** Every channel the user opens goes to the sliver's sshd through one upstream connection;
   * opened() is called as each one opens there (the first ends the login's timing). */
  #relay(conn: Connection, upstream: ssh2.Client, entry: Entry, opened: () => void): void {
    upstream.on('close', () => conn.end());
    conn.on('session', (accept) => this.#session(accept(), upstream, opened));
    conn.on('tcpip', (accept, reject, info) => {
      upstream.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, up) => {
        if (err) return reject();
        splice(accept(), up);
      });
    });
    conn.on('request', (accept, reject) => reject?.());
    this.#o.log.debug({ slice: entry.slice }, 'relaying');
  }

  #session(session: Session, upstream: ssh2.Client, opened: () => void): void {
    let pty: PseudoTtyInfo | null = null;
    let agent = false;
    session.on('auth-agent', (accept) => {
      agent = true;
      accept?.();
    });
    const env: Record<string, string> = {};
    let up: ClientChannel | null = null;
    session.on('pty', (accept, _reject, info) => {
      pty = info;
      accept?.();
    });
    session.on('window-change', (accept, _reject, info) => {
      up?.setWindow(info.rows, info.cols, info.height, info.width);
      accept?.();
    });
    session.on('env', (accept, _reject, info) => {
      env[info.key] = info.val;
      accept?.();
    });
    session.on('signal', (accept, _reject, info) => {
      up?.signal(info.name);
      accept?.();
    });
    // Accepted at once: what the user sends before the sliver's channel is open (sftp's first
    // packet, a piped script, EOF) waits in the stream instead of being lost.
    const start = (accept: () => ServerChannel, open: (cb: (err: Error | undefined, ch: ClientChannel) => void) => void) => {
      const down = accept();
      open((err, ch) => {
        if (err) {
          this.#o.log.debug({ err: err.message }, 'the sliver refused a channel');
          down.stderr.write(`PlanetLite front door: the sliver refused this request (${err.message})\r\n`);
          down.exit(255);
          down.end();
          return;
        }
        up = ch;
        opened();
        splice(down, ch);
      });
    };
    const ptyOpts = () => (pty ? { rows: pty.rows, cols: pty.cols, height: pty.height, width: pty.width, term: pty.term, modes: pty.modes } : undefined);
    session.on('shell', (accept) => start(accept, (cb) => upstream.shell(ptyOpts() ?? false, { env, ...forwardAgent(agent) }, cb)));
    session.on('exec', (accept, _reject, info) => {
      const p = ptyOpts();
      start(accept, (cb) => upstream.exec(info.command, { env, ...forwardAgent(agent), ...(p ? { pty: p } : {}) }, cb));
    });
    session.on('subsystem', (accept, _reject, info) => start(accept, (cb) => upstream.subsys(info.name, cb)));
    session.on('x11', (_accept, reject) => reject?.());
  }
}

/**
 * Joins the user's channel and the sliver's: data both ways (with backpressure), stderr, the
 * user's EOF; the exit status or signal is passed on before the user's channel closes.
 */
function splice(down: ServerChannel, up: ClientChannel): void {
  let exit: [number] | [string, boolean, string] | null = null;
  up.on('exit', (codeOrSignal: number | null, signal?: string, dump?: boolean, desc?: string) => {
    exit = typeof codeOrSignal === 'number' ? [codeOrSignal] : [signal ?? codeOrSignal ?? 'KILL', dump ?? false, desc ?? ''];
  });
  down.pipe(up);
  up.pipe(down, { end: false });
  if (down.stderr && up.stderr) up.stderr.pipe(down.stderr as unknown as NodeJS.WritableStream, { end: false });
  let ended = false;
  let closed = false;
  const finish = () => {
    if (!ended || !closed) return;
    if (exit) (down.exit as (...a: unknown[]) => void)(...exit);
    down.end();
  };
  up.on('end', () => {
    ended = true;
    finish();
  });
  up.on('close', () => {
    closed = true;
    // A close without EOF: nothing more comes.
    if (!ended) setTimeout(() => {
      ended = true;
      finish();
    }, 50);
    finish();
  });
  down.on('close', () => up.close());
  down.on('error', () => up.close());
  up.on('error', () => down.close());
}

/** ssh2 takes agentForward in shell() and exec() options; its types leave it out. */
const forwardAgent = (on: boolean) => (on ? ({ agentForward: true } as object) : {});

/**
 * The user's forwarded agent, as the sliver's sshd asks for it: each request opens an
 * auth-agent@openssh.com channel back to the user. ssh2's server has no public call for that
 * channel, so this uses the two internals its own forwardOut() uses (checked with ssh2 1.17).
 */
class UserAgent extends ssh2.BaseAgent {
  /** The user's connection, once a login takes the sliver connection this agent serves. */
  #conn: Connection | null = null;

  bind(conn: Connection): void {
    this.#conn = conn;
  }

  getIdentities(cb: (err: Error | undefined, keys?: ParsedKey[]) => void): void {
    cb(new Error('the front door logs in with its own key'));
  }

  sign(_key: unknown, _data: Buffer, cb: unknown): void {
    if (typeof cb === 'function') (cb as (err: Error) => void)(new Error('the front door logs in with its own key'));
  }

  override getStream(cb: (err: Error | undefined, stream?: Duplex) => void): void {
    if (!this.#conn) return cb(new Error('no user holds this connection yet'));
    const c = this.#conn as unknown as { _chanMgr?: { add(f: unknown): number }; _protocol?: { openssh_authAgent?(id: number, window: number, packet: number): void } };
    if (!c._chanMgr || !c._protocol?.openssh_authAgent) return cb(new Error('agent forwarding is not available with this ssh2'));
    const opened = Object.assign((err: Error | undefined, stream: Duplex) => cb(err, stream), { type: 'auth-agent@openssh.com' });
    const id = c._chanMgr.add(opened);
    if (id === -1) return cb(new Error('no free channel for the agent'));
    c._protocol.openssh_authAgent(id, 2 * 1024 * 1024, 32 * 1024);
  }
}
