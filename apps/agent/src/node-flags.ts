// The agent daemon's own V8 flags. `run` holds little live data but allocates briskly (cgroup
// reads every second, command output, documents): with V8's defaults garbage grows it to
// hundreds of MB, and every host command it starts forks it, so its size costs time too
// (docs/benchmarks.md, "Density with layered sliver roots").
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=1', '--optimize-for-size'] as const;

/** Runs this process again with AGENT_NODE_FLAGS, keeping its pid (process.execve), unless it
 * has them; returns only when it has them (or this Node cannot execve). */
export function reexecWithAgentFlags(): void {
  if (typeof process.execve !== 'function' || AGENT_NODE_FLAGS.every((f) => process.execArgv.includes(f))) return;
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...AGENT_NODE_FLAGS, ...process.argv.slice(1)], process.env);
}
