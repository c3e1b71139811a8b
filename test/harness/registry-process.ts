// A real `planetlite-registry serve` process on a free loopback port, for tests and benchmarks
// that need the registry as its own process (replicas, load generators).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freePort } from './services.ts';

const MAIN = fileURLToPath(new URL('../../apps/registry/dist/main.js', import.meta.url));

export interface RegistryProcess {
  url: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** Starts the built registry with env added to this process's; resolves once /healthz answers. */
export async function startRegistryProcess(env: Record<string, string>, timeoutMs = 20_000): Promise<RegistryProcess> {
  if (!existsSync(MAIN)) throw new Error('apps/registry is not built: run bash scripts/setup.sh');
  const port = await freePort();
  const proc = spawn(process.execPath, [MAIN, 'serve', '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, PLANETLITE_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    await once(proc, 'exit');
  };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`registry exited with code ${proc.exitCode} before answering /healthz`);
    if (await fetch(`${url}/healthz`).then((r) => r.ok, () => false)) return { url, proc, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error(`registry did not answer /healthz within ${timeoutMs} ms`);
}
