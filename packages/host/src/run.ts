// Every host command goes through run(): an argument array (never a shell string), and on
// failure a CommandError that carries the command, its exit code and its stderr.
import { execa } from 'execa';
import type { Coprocess } from './coprocess.js';
import { activeForker } from './forker.js';

export interface RunOptions {
  /** Text for the command's standard input. */
  input?: string;
  cwd?: string;
  env?: Record<string, string>;
  /** Kill the command after this many ms (default 120 s). */
  timeoutMs?: number;
  /** Exit codes besides 0 that are an answer, not a failure (e.g. 1 from `ip -force -batch`
   * when some of its commands failed); the result carries the code. */
  allowExit?: readonly number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** Set when the command exited with one of allowExit's codes. */
  exitCode?: number;
}

export class CommandError extends Error {
  readonly command: string;
  readonly args: readonly string[];
  readonly exitCode: number | undefined;
  readonly stderr: string;

  constructor(command: string, args: readonly string[], exitCode: number | undefined, stderr: string, reason?: string) {
    const shown = [command, ...args].join(' ');
    const why = reason ?? (exitCode === undefined ? 'did not finish' : `exited with ${exitCode}`);
    super(`${shown} ${why}${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`);
    this.name = 'CommandError';
    this.command = command;
    this.args = args;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

let commandsRun = 0;

/** How many host commands this process has started through run() (benchmarks count a change's cost with it). */
export function commandCount(): number {
  return commandsRun;
}

/** Counts one host operation made otherwise than through run() (a Coprocess request). */
export function noteCommand(): void {
  commandsRun++;
}

export async function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const forker = activeForker();
  if (forker) return runForked(forker, command, args, opts);
  commandsRun++;
  try {
    const res = await execa(command, args, {
      // No input: stdin is /dev/null, so a command that would read it does not wait for ever.
      ...(opts.input === undefined ? { stdin: 'ignore' as const } : { input: opts.input }),
      cwd: opts.cwd,
      env: opts.env,
      timeout: opts.timeoutMs ?? 120_000,
      stripFinalNewline: true,
      reject: true,
    });
    return { stdout: String(res.stdout), stderr: String(res.stderr) };
  } catch (err) {
    const e = err as { exitCode?: number; stdout?: unknown; stderr?: unknown; timedOut?: boolean; code?: string; shortMessage?: string };
    if (e.exitCode !== undefined && !e.timedOut && opts.allowExit?.includes(e.exitCode)) {
      return { stdout: String(e.stdout ?? ''), stderr: String(e.stderr ?? ''), exitCode: e.exitCode };
    }
    let reason: string | undefined;
    if (e.timedOut) reason = `timed out after ${opts.timeoutMs ?? 120_000} ms`;
    else if (e.code === 'ENOENT') reason = 'is not installed (run scripts/setup.sh)';
    throw new CommandError(command, args, e.exitCode, typeof e.stderr === 'string' ? e.stderr : '', reason);
  }
}

/** The same command through the forker (forker.ts): the same answers and errors as execa's path. */
async function runForked(forker: Coprocess, command: string, args: readonly string[], opts: RunOptions): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  let a: Record<string, unknown>;
  try {
    a = await forker.request(
      { argv: [command, ...args], env: opts.env ? { ...process.env, ...opts.env } : process.env, cwd: opts.cwd, input: opts.input, timeout_ms: timeoutMs },
      // The forker kills the command at timeoutMs; the helper itself only if it stops answering.
      { timeoutMs: timeoutMs + 30_000 },
    );
  } catch (err) {
    // Not the helper's own message: it quotes the request, environment included.
    const helper = err instanceof CommandError ? err : null;
    const code = helper?.exitCode !== undefined ? ` (exit ${helper.exitCode})` : '';
    throw new CommandError(command, args, undefined, helper?.stderr ?? '', `was lost: the command forker ended or stopped answering${code}`);
  }
  const stdout = stripFinalNewline(String(a.stdout ?? ''));
  const stderr = stripFinalNewline(String(a.stderr ?? ''));
  const code = typeof a.code === 'number' ? a.code : undefined;
  if (code === 0) return { stdout, stderr };
  if (code !== undefined && opts.allowExit?.includes(code)) return { stdout, stderr, exitCode: code };
  let reason: string | undefined;
  if (a.timed_out) reason = `timed out after ${timeoutMs} ms`;
  else if (a.spawn_error === 'ENOENT' && a.path !== opts.cwd) reason = 'is not installed (run scripts/setup.sh)';
  else if (typeof a.spawn_error === 'string') reason = `could not start: ${a.spawn_error}${a.path ? ` (${String(a.path)})` : ''}`;
  // A signal shows as a negative code from Python; as execa, no exit code then.
  throw new CommandError(command, args, code !== undefined && code >= 0 ? code : undefined, stderr, reason ?? (code !== undefined && code < 0 ? `was killed by signal ${-code}` : undefined));
}

function stripFinalNewline(s: string): string {
  return s.endsWith('\r\n') ? s.slice(0, -2) : s.endsWith('\n') ? s.slice(0, -1) : s;
}

/** The CommandError behind err (err itself or a cause along its chain), if any. */
export function commandErrorOf(err: unknown): CommandError | null {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) if (e instanceof CommandError) return e;
  return null;
}

/**
 * Fields for a log line about a failure: its message, its stable code when it has one (the driver
 * families' errors), and the failed command's command line, exit code and stderr when a host
 * command is behind it — so the log keeps what the one-line message shortens.
 */
export function errorFields(err: unknown): { err: string; code?: string; command?: string; exit_code?: number; stderr?: string } {
  const out: { err: string; code?: string; command?: string; exit_code?: number; stderr?: string } = { err: err instanceof Error ? err.message : String(err) };
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') out.code = code;
  const ce = commandErrorOf(err);
  if (ce) {
    out.command = [ce.command, ...ce.args].join(' ');
    if (ce.exitCode !== undefined) out.exit_code = ce.exitCode;
    if (ce.stderr) out.stderr = ce.stderr;
  }
  return out;
}

/** Like run(), but a failure is an answer (null), for probes such as "is this mounted?". */
export async function tryRun(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult | null> {
  try {
    return await run(command, args, opts);
  } catch (err) {
    if (err instanceof CommandError) return null;
    throw err;
  }
}
