// A helper process that stays: started once, it takes one JSON request per line on stdin and
// answers each with one JSON line on stdout ({"ok": true, ...} or {"error": "..."}), in order.
// For host work that no command-line tool does and whose interpreter costs more to start than the
// work itself (the Python helper of layered sliver roots: 40 ms to start, 2 ms to mount).
// It never keeps the process alive: it is unref'd while nothing is asked of it, and started again
// if it died. Each request counts as a host command (commandCount).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CommandError, noteCommand } from './run.js';

interface Pending {
  request: string;
  resolve: (answer: Record<string, unknown>) => void;
  reject: (err: Error) => void;
}

export class Coprocess {
  readonly #argv: readonly string[];
  #child: ChildProcessWithoutNullStreams | null = null;
  #stderr = '';
  readonly #pending: Pending[] = [];

  readonly #timeoutMs: number;

  /** argv: the program and its arguments (e.g. python3 -I -S -c SCRIPT). A request not answered
   * within timeoutMs kills the helper (every request waiting fails; the next starts it again). */
  constructor(argv: readonly string[], opts: { timeoutMs?: number } = {}) {
    this.#argv = argv;
    this.#timeoutMs = opts.timeoutMs ?? 60_000;
  }

  /** Sends one request; resolves with its answer, or rejects with a CommandError naming it. */
  request(req: object): Promise<Record<string, unknown>> {
    noteCommand();
    const line = JSON.stringify(req);
    return new Promise((resolve, reject) => {
      const child = this.#start();
      const timer = setTimeout(() => {
        this.#stderr += `\n(no answer within ${this.#timeoutMs} ms: killed)`;
        child.kill('SIGKILL');
      }, this.#timeoutMs);
      timer.unref();
      this.#pending.push({ request: line, resolve: (a) => { clearTimeout(timer); resolve(a); }, reject: (e) => { clearTimeout(timer); reject(e); } });
      (child.stdout as unknown as { ref: () => void }).ref();
      child.stdin.write(line + '\n');
    });
  }

  /** Ends the helper (its stdin closes; it exits when it has answered). */
  close(): void {
    this.#child?.stdin.end();
    this.#child = null;
  }

  #start(): ChildProcessWithoutNullStreams {
    if (this.#child) return this.#child;
    const [cmd, ...args] = this.#argv as [string, ...string[]];
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child = child;
    this.#stderr = '';
    // Only an answer awaited keeps this process alive (stdout is ref'd while one is).
    child.unref();
    for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as unknown as { unref?: () => void }).unref?.();
    child.stderr.on('data', (d: Buffer) => (this.#stderr = (this.#stderr + d.toString()).slice(-4000)));
    createInterface({ input: child.stdout }).on('line', (text) => {
      const p = this.#pending.shift();
      if (this.#pending.length === 0) (child.stdout as unknown as { unref: () => void }).unref();
      if (!p) return;
      let answer: Record<string, unknown>;
      try {
        answer = JSON.parse(text) as Record<string, unknown>;
      } catch {
        p.reject(this.#error(p, undefined, `answered something not JSON: ${text.slice(0, 200)}`));
        return;
      }
      if (typeof answer.error === 'string') p.reject(this.#error(p, undefined, answer.error));
      else p.resolve(answer);
    });
    const fail = (code: number | undefined, why: string) => {
      if (this.#child === child) this.#child = null;
      for (const p of this.#pending.splice(0)) p.reject(this.#error(p, code, why));
    };
    child.on('error', (err: NodeJS.ErrnoException) => fail(undefined, err.code === 'ENOENT' ? 'is not installed (run scripts/setup.sh)' : err.message));
    child.on('exit', (code) => fail(code ?? undefined, `exited with ${code}`));
    return child;
  }

  #error(p: Pending, code: number | undefined, why: string): CommandError {
    const [cmd] = this.#argv as [string];
    return new CommandError(cmd, ['(helper)', p.request], code, this.#stderr, why);
  }
}
