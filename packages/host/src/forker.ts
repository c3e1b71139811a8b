// The command forker: a small Python process that starts host commands for a long-lived process
// (the node agent) and sends back each one's exit code and output.
//
// Why: Node's spawn() blocks the event loop until the child has exec'd — 6–10 ms for a fresh
// Node here and 17–32 ms inside a busy agent (fork copies the page tables of a big heap, and
// libuv waits on the exec). A build runs a dozen commands, so the agent spent more time forking
// than the commands took. Python's subprocess uses vfork: a request costs the agent ≈ 0.2 ms of
// event loop, and commands that run at once no longer wait on each other's forks.
//
// It answers each request with its id (tagged Coprocess), so a long command does not hold up a
// short one. Requests: {argv, env, cwd?, input?, timeout_ms}; answers: {id, code, stdout,
// stderr} or {id, code: null, spawn_error: "ENOENT" | …} or {id, code: null, timed_out: true}.
import { Coprocess } from './coprocess.js';

export const FORKER_PYTHON = '/usr/bin/python3';

const FORKER_SCRIPT = `
import json, os, signal, subprocess, sys, threading
signal.signal(signal.SIGINT, lambda *_: os._exit(130))
out = threading.Lock()
def answer(a):
    line = json.dumps(a) + '\\n'
    with out:
        sys.stdout.write(line); sys.stdout.flush()
def work(r):
    a = {'id': r['id'], 'code': None}
    try:
        data = r.get('input')
        p = subprocess.run(r['argv'], env=r['env'], cwd=r.get('cwd'),
            stdin=subprocess.DEVNULL if data is None else None,
            input=None if data is None else data.encode(),
            capture_output=True, timeout=r['timeout_ms'] / 1000)
        a.update(code=p.returncode, stdout=p.stdout.decode(errors='replace'), stderr=p.stderr.decode(errors='replace'))
    except subprocess.TimeoutExpired as e:
        a.update(timed_out=True, stderr=(e.stderr or b'').decode(errors='replace'))
    except OSError as e:
        a.update(spawn_error=e.__class__.__name__ if e.errno is None else ('ENOENT' if e.errno == 2 else os.strerror(e.errno)), path=e.filename)
    except Exception as e:
        a.update(spawn_error=str(e))
    answer(a)
for line in sys.stdin:
    threading.Thread(target=work, args=(json.loads(line),), daemon=True).start()
`;

let forker: Coprocess | null = null;

/** From now on this process's run() starts its commands through the forker (the agent calls it
 * at start). Short-lived processes (the CLI, tests) keep Node's spawn: Python's start, ≈ 30 ms,
 * costs more than their few commands would save. */
export function useForker(on = true): void {
  if (on && !forker) forker = new Coprocess([FORKER_PYTHON, '-I', '-S', '-u', '-c', FORKER_SCRIPT], { tagged: true });
  else if (!on && forker) {
    forker.close();
    forker = null;
  }
}

export function activeForker(): Coprocess | null {
  return forker;
}
