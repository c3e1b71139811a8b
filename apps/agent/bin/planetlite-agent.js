#!/usr/bin/env node
// `run` is a long-lived daemon that holds little live data but allocates briskly (cgroup reads,
// command output, documents): with V8's defaults, garbage grows its heap to hundreds of MB, and
// every host command it starts forks it, so its size costs time too. It runs itself again (the
// same pid: process.execve) with a small young generation and V8's memory-saving mode.
const FLAGS = ['--max-semi-space-size=1', '--optimize-for-size'];
if (process.argv[2] === 'run' && typeof process.execve === 'function' && !FLAGS.every((f) => process.execArgv.includes(f))) {
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...FLAGS, ...process.argv.slice(1)], process.env);
}
await import('../dist/main.js');
