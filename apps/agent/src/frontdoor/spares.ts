// Logins to slivers' own sshd made ahead of the users who will need them: the node leg's TCP,
// key exchange and login (about 200 ms, mostly the sliver's sshd starting its connection
// process) run while the user's own key exchange and login go on, or before the user even
// connects, instead of after. One spare per sliver and account at most; a user who logs in takes
// the spare for their login alone (never shared with another user's login) and a new one is made
// behind it for the next login. Spares of slivers that leave the table, and spares nobody took
// for IDLE_MS, are closed.
import type ssh2 from 'ssh2';

/** A logged-in connection to one sliver's sshd, and the hook its forwarded-agent requests use. */
export interface SliverLogin {
  client: ssh2.Client;
  /** Binds the connection to the user who takes it (for agent forwarding). */
  bind(owner: unknown): void;
}

/** Which sliver, where, as whom: a spare serves only a login for the same three. */
export interface SpareKey {
  sliver: string;
  address: string;
  /** The sliver's account: the slice's, or root. */
  user: string;
}

const IDLE_MS = 10 * 60_000;

interface Spare {
  key: SpareKey;
  login: Promise<SliverLogin>;
  /** Set once the login is ready, to close it when it is dropped. */
  ready: SliverLogin | null;
  /** Closed unused (idle, or its sliver gone): a login that arrives later is closed at once. */
  dropped: boolean;
  idle: NodeJS.Timeout;
}

export class Spares {
  readonly #connect: (key: SpareKey) => Promise<SliverLogin>;
  readonly #idleMs: number;
  readonly #spares = new Map<string, Spare>();

  constructor(connect: (key: SpareKey) => Promise<SliverLogin>, idleMs = IDLE_MS) {
    this.#connect = connect;
    this.#idleMs = idleMs;
  }

  /** How many spares are kept or being made now. */
  get size(): number {
    return this.#spares.size;
  }

  /** Starts a spare for this sliver and account, unless one is kept or on its way. */
  warm(key: SpareKey): void {
    const id = idOf(key);
    if (this.#spares.has(id)) return;
    const spare: Spare = { key, login: this.#connect(key), ready: null, dropped: false, idle: setTimeout(() => this.#drop(id, spare), this.#idleMs) };
    spare.idle.unref();
    this.#spares.set(id, spare);
    spare.login.then(
      (login) => {
        spare.ready = login;
        // A spare that ends (the sliver stopped, its sshd restarted) makes way for a new one.
        login.client.once('close', () => this.#forget(id, spare));
        if (spare.dropped) login.client.end();
      },
      () => this.#forget(id, spare),
    );
  }

  /**
   * A login for this user's connection alone: the spare (ready or on its way) or, failing it, a
   * new one; the next spare is started behind it.
   */
  async take(key: SpareKey): Promise<SliverLogin> {
    const id = idOf(key);
    const spare = this.#spares.get(id);
    this.#forget(id, spare);
    this.warm(key);
    if (spare) {
      const login = await spare.login.catch(() => null);
      // One that closed while it waited is no use; a fresh one is.
      if (login && !closed(login.client)) return login;
    }
    return this.#connect(key);
  }

  /** Closes the spares of slivers no longer in the table (deleted, or moved to another address). */
  retain(keep: Iterable<{ sliver: string; address: string }>): void {
    const live = new Set([...keep].map((k) => `${k.sliver}\0${k.address}`));
    for (const [id, spare] of this.#spares) if (!live.has(`${spare.key.sliver}\0${spare.key.address}`)) this.#drop(id, spare);
  }

  close(): void {
    for (const [id, spare] of this.#spares) this.#drop(id, spare);
  }

  #drop(id: string, spare: Spare): void {
    this.#forget(id, spare);
    spare.dropped = true;
    spare.ready?.client.end();
  }

  #forget(id: string, spare: Spare | undefined): void {
    if (!spare) return;
    clearTimeout(spare.idle);
    if (this.#spares.get(id) === spare) this.#spares.delete(id);
  }
}

const idOf = (k: SpareKey) => `${k.sliver}\0${k.address}\0${k.user}`;

/** ssh2 keeps no public 'closed' flag; its socket does. */
const closed = (c: ssh2.Client) => {
  const sock = (c as unknown as { _sock?: { destroyed?: boolean; writable?: boolean } })._sock;
  return !sock || sock.destroyed === true || sock.writable === false;
};
