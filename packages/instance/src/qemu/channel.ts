// The two sockets qemu serves per VM: QMP (freeze, thaw, status, quit) and the control serial
// port, where the initramfs's PID 1 takes halt and exec. Both speak lines over a unix socket, and
// both accept one client at a time, so the driver never holds one open between calls.
import { randomBytes } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { CommandError, type RunResult } from '@planetlite/host';

/** A guest may write anything on its control port: lines past this are dropped, not buffered. */
const MAX_LINE = 4 * 1024 * 1024;

/** A unix socket read line by line, with a deadline on every wait. */
class LineSocket {
  readonly #sock: Socket;
  readonly #lines: string[] = [];
  #buf = '';
  #waiter: (() => void) | null = null;
  #closed: Error | null = null;

  private constructor(sock: Socket) {
    this.#sock = sock;
    sock.setEncoding('latin1');
    sock.on('data', (chunk: string) => this.#take(chunk));
    sock.on('error', (err) => this.#end(err));
    sock.on('close', () => this.#end(new Error('closed by qemu')));
  }

  static async open(path: string, timeoutMs: number): Promise<LineSocket> {
    // The socket's directory belongs to the VM's uid: a jailed qemu could put a symlink there to
    // another VM's socket. connect() would follow it; a socket that is not a socket is refused.
    const st = await lstat(path);
    if (!st.isSocket()) throw new Error(`${path} is not a socket`);
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`no answer on ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new LineSocket(sock));
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  #take(chunk: string): void {
    this.#buf += chunk;
    for (let nl = this.#buf.indexOf('\n'); nl >= 0; nl = this.#buf.indexOf('\n')) {
      this.#lines.push(this.#buf.slice(0, nl).replace(/\r$/, ''));
      this.#buf = this.#buf.slice(nl + 1);
    }
    if (this.#buf.length > MAX_LINE) this.#buf = '';
    this.#wake();
  }

  #end(err: Error): void {
    this.#closed ??= err;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }

  write(line: string): void {
    this.#sock.write(`${line}\n`);
  }

  /** The next line that matches, skipping others; rejects at the deadline or when the socket ends. */
  async expect<T>(match: (line: string) => T | null, deadline: number, what: string): Promise<T> {
    for (;;) {
      while (this.#lines.length) {
        const hit = match(this.#lines.shift()!);
        if (hit !== null) return hit;
      }
      if (this.#closed) throw new Error(`${what}: ${this.#closed.message}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: no answer in time`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  get closed(): boolean {
    return this.#closed !== null;
  }

  close(): void {
    this.#sock.destroy();
  }
}

/** Runs one QMP command (after the capabilities handshake) and returns its "return" value. */
export async function qmp(path: string, command: string, timeoutMs = 5000): Promise<unknown> {
  const deadline = Date.now() + timeoutMs;
  const sock = await LineSocket.open(path, timeoutMs);
  try {
    const parse = (line: string): Record<string, unknown> | null => {
      try {
        const msg = JSON.parse(line) as Record<string, unknown>;
        return 'return' in msg || 'error' in msg || 'QMP' in msg ? msg : null; // skip events
      } catch {
        return null; // not JSON: not an answer
      }
    };
    await sock.expect(parse, deadline, `QMP greeting on ${path}`);
    for (const execute of ['qmp_capabilities', command]) {
      sock.write(JSON.stringify({ execute }));
      const reply = await sock.expect(parse, deadline, `QMP ${execute} on ${path}`);
      if ('error' in reply) throw new Error(`QMP ${execute} failed: ${JSON.stringify(reply.error)}`);
      if (execute === command) return reply.return;
    }
    return undefined;
  } finally {
    sock.close();
  }
}

/** QMP query-status: the run state ('running', 'paused', 'shutdown', …). */
export async function qmpStatus(path: string, timeoutMs?: number): Promise<string> {
  const status = (await qmp(path, 'query-status', timeoutMs)) as { status?: unknown } | undefined;
  return typeof status?.status === 'string' ? status.status : 'unknown';
}

/** Asks the guest's PID 1 to halt the image's init (SIGPWR). False when the port is not there. */
export async function controlHalt(path: string): Promise<boolean> {
  const sock = await LineSocket.open(path, 2000).catch(() => null);
  if (!sock) return false;
  sock.write('halt');
  // Give qemu a moment to take the line before the connection goes.
  await new Promise((r) => setTimeout(r, 100));
  sock.close();
  return true;
}

const b64 = (s: string | Buffer) => `_${Buffer.from(s).toString('base64')}`;
const unb64 = (s: string) => Buffer.from(s.replace(/^_/, ''), 'base64').toString('utf8');

/** The control-port line that asks for an exec (see INIT_SCRIPT in initramfs.ts). */
export function execRequest(id: string, argv: string[], input: string): string {
  return ['exec', id, b64(input), ...argv.map(b64)].join(' ');
}

/** Parses "result ID EXIT _STDOUT _STDERR" for request id, or null for any other line. */
export function parseExecResult(line: string, id: string): { code: number; stdout: string; stderr: string } | null {
  const f = line.split(' ');
  if (f.length !== 5 || f[0] !== 'result' || f[1] !== id || !/^\d{1,3}$/.test(f[2] ?? '')) return null;
  return { code: Number(f[2]), stdout: unb64(f[3] ?? ''), stderr: unb64(f[4] ?? '') };
}

/**
 * Runs argv in the guest through the control port: ping until the guest's PID 1 answers (it may
 * still be booting), then one exec. Rejects with a CommandError when the command exits non-zero.
 */
export async function controlExec(path: string, argv: string[], input: string, timeoutMs: number): Promise<RunResult> {
  const deadline = Date.now() + timeoutMs;
  const sock = await LineSocket.open(path, Math.min(timeoutMs, 5000));
  try {
    const nonce = randomBytes(8).toString('hex');
    // A ping sent before the guest opened the port may be lost: repeat it until one comes back.
    for (let ready = false; !ready; ) {
      if (sock.closed || Date.now() > deadline) throw new Error(`the guest did not answer on its control port ${path} (still booting, or its initramfs is not PlanetLite's)`);
      sock.write(`ping ${nonce}`);
      ready = await sock.expect((l) => (l === `pong ${nonce}` ? true : null), Math.min(deadline, Date.now() + 1000), 'ping').catch(() => false);
    }
    sock.write(execRequest(nonce, argv, input));
    const r = await sock.expect((l) => parseExecResult(l, nonce), deadline, `exec ${argv[0] ?? ''} in the guest`);
    // As run() returns them: one final newline stripped.
    const [stdout, stderr] = [r.stdout.replace(/\n$/, ''), r.stderr.replace(/\n$/, '')];
    if (r.code !== 0) throw new CommandError(argv[0] ?? '', argv.slice(1), r.code, stderr);
    return { stdout, stderr };
  } finally {
    sock.close();
  }
}
