// The agent's side of the ssh front door: makes its keys, runs its process (main.ts) in the
// node's network namespace, hands it the slivers users may enter, and turns its logins into
// sliver.login events. A process of its own: a malformed connection can at worst take down the
// front door, which is started again, never the agent.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DesiredState, NodeEventCreate } from '@planetlite/api';
import { jsonEqual, type Logger } from '@planetlite/core';
import { parseSubnet, slotAddress } from '@planetlite/network';
import type { SliverRecord } from '../ledger.js';
import { ensureFrontDoorKeys, frontDoorAuthorizedLine, type FrontDoorKeys } from './keys.js';
import type { FromFrontDoor, ToFrontDoor } from './main.js';
import type { FrontDoorEntry } from './server.js';

export interface FrontDoorOptions {
  stateDir: string;
  /** The node's public address: the front door listens there. */
  address: string;
  /** The front_door_port setting: 'auto', 'off' or a port. */
  port: 'auto' | 'off' | number;
  netns: string | null;
  sliverSubnet: string;
  log: Logger;
  emit: (ev: NodeEventCreate) => void;
}

const RESTART_MS = 1000;
const RETRY_LISTEN_MS = 30_000;

export class FrontDoor {
  readonly #o: FrontDoorOptions;
  #keys: FrontDoorKeys | null = null;
  #child: ChildProcess | null = null;
  #stopping = false;
  #table: FrontDoorEntry[] = [];
  /** The table as last sent, and the process it went to (a new one gets it again). */
  #sent: { to: ChildProcess; table: FrontDoorEntry[] } | null = null;
  #restart: NodeJS.Timeout | null = null;
  /** The last start could not listen: the next try waits longer (the port may stay taken). */
  #listenFailed = false;
  /** The port it listens on, once it does. */
  port: number | null = null;

  constructor(opts: FrontDoorOptions) {
    this.#o = opts;
  }

  /** The front door process's id while it runs. */
  get pid(): number | null {
    return this.#child?.pid ?? null;
  }

  get keys(): FrontDoorKeys | null {
    return this.#keys;
  }

  /** Makes (or reads) the keys; the slivers' authorized_keys need them even with the door off. */
  async prepare(): Promise<FrontDoorKeys> {
    this.#keys ??= await ensureFrontDoorKeys(this.#o.stateDir);
    return this.#keys;
  }

  /** What the registry publishes with the node, so users can pin the host key: null while it does not listen. */
  published(): { port: number; host_key: string } | null {
    return this.port !== null && this.#keys ? { port: this.port, host_key: this.#keys.hostPublic } : null;
  }

  /** The line a sliver's authorized_keys holds for the front door. */
  authorizedLines(rec: SliverRecord): string[] {
    if (!this.#keys) return [];
    const { hostAddress } = slotAddress(parseSubnet(this.#o.sliverSubnet), rec.slot);
    return [frontDoorAuthorizedLine(this.#keys.clientPublic, hostAddress)];
  }

  /** Starts the front door's process; resolves once it listens (or failed to). */
  async start(): Promise<void> {
    await this.prepare();
    if (this.#o.port === 'off') {
      this.#o.log.info('front door off (front_door_port is off): slivers are reached through their forwarded ports only');
      return;
    }
    await this.#spawn();
  }

  #spawn(): Promise<void> {
    const script = mainScript();
    const argv = [process.execPath, script, this.#o.stateDir, this.#o.address, String(this.#o.port)];
    const [cmd, ...args] = this.#o.netns ? ['nsenter', `--net=/run/netns/${this.#o.netns}`, ...argv] : argv;
    const child = spawn(cmd!, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#child = child;
    return new Promise<void>((resolve) => {
      child.on('message', (m: FromFrontDoor) => {
        switch (m.type) {
          case 'log':
            this.#o.log[m.level](m.fields, m.msg);
            return;
          case 'listening':
            this.#listenFailed = false;
            this.port = m.port;
            this.#o.log.info({ address: this.#o.address, port: m.port, why: m.why }, `front door listening: ssh SLICE@${this.#o.address}${m.port === 22 ? '' : ` -p ${m.port}`}`);
            this.#send();
            resolve();
            return;
          case 'failed':
            this.#listenFailed = true;
            this.#o.log.error({ address: this.#o.address, port: this.#o.port, err: m.error }, 'front door could not listen; slivers stay reachable through their forwarded ports');
            resolve();
            return;
          case 'login':
            this.#o.emit({ type: 'sliver.login', sliver: m.event.sliver, data: { ...m.event } });
            return;
        }
      });
      child.on('error', (err) => {
        this.#o.log.error({ err: err.message }, 'front door process could not start');
        resolve();
      });
      child.on('exit', (code, signal) => {
        resolve();
        if (this.#child === child) {
          this.#child = null;
          this.port = null;
        }
        if (this.#stopping) return;
        const wait = this.#listenFailed ? RETRY_LISTEN_MS : RESTART_MS;
        this.#o.log.error({ code, signal, retry_ms: wait }, 'front door process ended; starting it again');
        this.#restart = setTimeout(() => void this.#spawn(), wait);
      });
    });
  }

  /** The slivers users may enter now: the document's (keys) on the ledger's slots (addresses). */
  update(doc: DesiredState | null, records: readonly SliverRecord[]): void {
    if (!doc) return;
    const subnet = parseSubnet(this.#o.sliverSubnet);
    const bySliver = new Map(records.map((r) => [r.id, r]));
    this.#table = doc.slivers.flatMap((s) => {
      const rec = bySliver.get(s.id);
      if (!rec || s.desired === 'deleted') return [];
      return [{ slice: s.slice, sliver: s.id, address: slotAddress(subnet, rec.slot).sliverAddress, keys: s.keys }];
    });
    this.#send();
  }

  #send(): void {
    const child = this.#child;
    if (!child?.connected) return;
    // The table is sent before and after every pass; most of those sends repeat the last one.
    // (Compared as values, not as JSON text: 400 KB of it per compare at 2,000 slivers.)
    if (this.#sent?.to === child && jsonEqual(this.#sent.table, this.#table)) return;
    const msg: ToFrontDoor = { type: 'table', slivers: this.#table };
    child.send(msg);
    this.#sent = { to: child, table: this.#table };
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#restart) clearTimeout(this.#restart);
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    // Closing the channel is the stop; a process that does not go is killed.
    if (child.connected) child.disconnect();
    const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(kill);
  }
}

/** The front door's own program: main.js beside this file in the build; from the sources (tests
 * of src), the built one; in a release, where this code is inside lib/agent.mjs, the bundle
 * scripts/release.sh makes beside it. */
function mainScript(): string {
  const here = fileURLToPath(new URL('./main.js', import.meta.url));
  const candidates = [here, here.replace('/src/frontdoor/', '/dist/frontdoor/'), fileURLToPath(new URL('./front-door.mjs', import.meta.url))];
  return candidates.find((p) => existsSync(p)) ?? here;
}
