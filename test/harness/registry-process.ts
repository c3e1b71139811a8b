// A real `planetlite-registry serve` process on a free loopback port, for tests and benchmarks
// that need the registry as its own process (replicas, load generators).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, fetch as undiciFetch } from 'undici';
import { freePort } from './services.ts';

const MAIN = fileURLToPath(new URL('../../apps/registry/dist/main.js', import.meta.url));

export interface RegistryProcess {
  url: string;
  /** The registry's CA (PEM) when it serves HTTPS, else null. */
  ca: string | null;
  proc: ChildProcess;
  stop(): Promise<void>;
}

export interface RegistryProcessOptions {
  timeoutMs?: number;
  /**
   * Serve HTTPS with the registry's own CA kept in this data dir (replicas given the same dir share
   * it). Absent: plain HTTP, which the registry allows on loopback.
   */
  tlsDataDir?: string;
  /** The CA to trust when the registry serves certificate files of its own (PLANETLITE_TLS_CERT). */
  ca?: string;
}

/** Starts the built registry with env added to this process's; resolves once /healthz answers. */
export async function startRegistryProcess(env: Record<string, string>, opts: RegistryProcessOptions = {}): Promise<RegistryProcess> {
  if (!existsSync(MAIN)) throw new Error('apps/registry is not built: run bash scripts/setup.sh');
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const port = await freePort();
  const tls = opts.tlsDataDir !== undefined || opts.ca !== undefined;
  const modeEnv: Record<string, string> = !tls ? { PLANETLITE_PLAIN_HTTP: '1' } : opts.tlsDataDir ? { PLANETLITE_DATA_DIR: opts.tlsDataDir } : {};
  const proc = spawn(process.execPath, [MAIN, 'serve', '--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, PLANETLITE_LOG_LEVEL: 'warn', ...modeEnv, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    await once(proc, 'exit');
  };
  const caFile = tls && !opts.ca ? join(opts.tlsDataDir as string, 'tls', 'ca.pem') : null;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`registry exited with code ${proc.exitCode} before answering /healthz`);
    const ca = opts.ca ?? (caFile && existsSync(caFile) ? readFileSync(caFile, 'utf8') : null);
    if (!tls || ca) {
      const dispatcher = ca ? new Agent({ connect: { ca } }) : undefined;
      const up = await undiciFetch(`${url}/healthz`, dispatcher ? { dispatcher } : {}).then((r) => r.ok, () => false);
      await dispatcher?.close();
      if (up) return { url, ca, proc, stop };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error(`registry did not answer /healthz within ${timeoutMs} ms`);
}
