// A container sliver whose sshd never started (a broken image, a root a crash left half made)
// runs unreachable while the API says `running`, and its experimenter learns nothing more than
// "connection refused". The clock report looks, once per start of each container sliver that has
// run for a grace period, whether anything listens on its port 22 (the driver reads the sliver's
// socket table from the host), and shows an error while nothing does. A sliver found listening
// is not looked at again until its next start, so a settled node reads nothing; one found silent
// is looked at on every clock report until it listens.
import type { Logger } from '@planetlite/core';
import type { InstanceDriver } from '@planetlite/instance';

/** The port the forwarded window's first port reaches inside a sliver. */
export const SSH_PORT = 22;

/** How long a started sliver has before a missing sshd counts (a debian12 boot under load). */
export const SSHD_GRACE_MS = 30_000;

export class SshdWatch {
  readonly #graceMs: number;
  readonly #log: Logger;
  /** When each sliver was last started by this process, or first seen running by it. */
  readonly #since = new Map<string, number>();
  /** Found listening since that start. */
  readonly #listening = new Set<string>();
  /** Found with nothing listening. */
  readonly #silent = new Set<string>();

  constructor(opts: { log: Logger; graceMs?: number }) {
    this.#log = opts.log;
    this.#graceMs = opts.graceMs ?? SSHD_GRACE_MS;
  }

  /** This process started the sliver's instance: what was found before is for an earlier start. */
  started(id: string): void {
    this.#since.set(id, Date.now());
    this.#listening.delete(id);
    this.#silent.delete(id);
  }

  /**
   * The error a running container sliver shows for its sshd, or null. look: read the host now
   * (a clock report); else the last verdict is repeated (a report a change sends at once).
   */
  async error(id: string, driver: Pick<InstanceDriver, 'listening'> | null | undefined, look: boolean): Promise<string | null> {
    if (this.#listening.has(id) || !driver?.listening) return null;
    const now = Date.now();
    let since = this.#since.get(id);
    if (since === undefined) this.#since.set(id, (since = now));
    if (look && now - since >= this.#graceMs) {
      const answer = await driver.listening(id, SSH_PORT).catch(() => null);
      if (answer === true) {
        if (this.#silent.delete(id)) this.#log.info({ sliver: id }, 'sshd now listens in the sliver');
        this.#listening.add(id);
      } else if (answer === false && !this.#silent.has(id)) {
        this.#silent.add(id);
        this.#log.warn({ sliver: id, since_ms: now - since }, 'nothing listens on port 22 in a running sliver');
      }
    }
    if (!this.#silent.has(id)) return null;
    return `nothing listens on port ${SSH_PORT} inside the sliver ${Math.round(this.#graceMs / 1000)} s after its start: its sshd did not start or has stopped, so ssh to it is refused (its console: planetlite sliver log ${id})`;
  }

  /** Forgets slivers no longer on the node. */
  keepOnly(ids: ReadonlySet<string>): void {
    for (const id of this.#since.keys()) {
      if (ids.has(id)) continue;
      this.#since.delete(id);
      this.#listening.delete(id);
      this.#silent.delete(id);
    }
  }
}
