// A helper process that stays: started once, it takes one JSON request per line on stdin and
// answers each with one JSON line on stdout ({"ok": true, ...} or {"error": "..."}), in order.
// For host work that no command-line tool does and whose interpreter costs more to start than the
// work itself (the Python helper of layered sliver roots: 40 ms to start, 2 ms to mount).
// It never keeps the process alive: it is unref'd while nothing is asked of it, and started again
// if it died. Each request counts as a host command (commandCount).
// A tagged helper gets an `id` in each request and sends it back in the answer, so it may answer
// out of order (the command forker of run(): a long command does not hold up a short one).
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CommandError, noteCommand } from './run.js';

interface Pending {
  id: number;
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
  readonly #tagged: boolean;
  #lastId = 0;

  /** argv: the program and its arguments (e.g. python3 -I -S -c SCRIPT). A request not answered
   * within timeoutMs kills the helper (every request waiting fails; the next starts it again).
   * tagged: requests carry an `id` the answers echo, and answers may come in any order. */
  constructor(argv: readonly string[], opts: { timeoutMs?: number; tagged?: boolean } = {}) {
    this.#argv = argv;
    this.#timeoutMs = opts.timeoutMs ?? 60_000;
    this.#tagged = opts.tagged ?? false;
  }

  /** Sends one request; resolves with its answer, or rejects with a CommandError naming it.
   * timeoutMs overrides the helper's for this request. */
  request(req: object, opts: { timeoutMs?: number } = {}): Promise<Record<string, unknown>> {
    noteCommand();
    const id = ++this.#lastId;
    const line = JSON.stringify(this.#tagged ? { ...req, id } : req);
    const timeoutMs = opts.timeoutMs ?? this.#timeoutMs;
    return new Promise((resolve, reject) => {
      const child = this.#start();
      const timer = setTimeout(() => {
        this.#stderr += `\n(no answer within ${timeoutMs} ms: killed)`;
        child.kill('SIGKILL');
      }, timeoutMs);
      timer.unref();
      this.#pending.push({ id, request: line, resolve: (a) => { clearTimeout(timer); resolve(a); }, reject: (e) => { clearTimeout(timer); reject(e); } });
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
      let answer: Record<string, unknown> | null = null;
      try {
        answer = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // Taken as the answer to the oldest request, which is failed with it.
      }
      const tag = answer?.id;
      const at = this.#tagged && answer ? this.#pending.findIndex((p) => p.id === tag) : 0;
      const p = at >= 0 ? this.#pending.splice(at, 1)[0] : undefined;
      if (this.#pending.length === 0) (child.stdout as unknown as { unref: () => void }).unref();
      if (!p) return;
      if (!answer) p.reject(this.#error(p, undefined, `answered something not JSON: ${text.slice(0, 200)}`));
      else if (typeof answer.error === 'string') p.reject(this.#error(p, undefined, answer.error));
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
