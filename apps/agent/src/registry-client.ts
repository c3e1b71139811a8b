// The agent's client for the registry: every request has a deadline and a bounded answer, so a
// registry that hangs or answers without end costs a node one failed request, not a stalled loop.
import { PlanetLiteClient } from '@planetlite/api';

/** A request's deadline; a long-poll gets its wait on top. */
export const REGISTRY_TIMEOUT_MS = 30_000;
/** The largest answer read: a desired-state document of thousands of slivers fits. */
export const REGISTRY_MAX_BODY = 64 * 1024 * 1024;

export function registryClient(registry: string, token?: string, opts: { timeoutMs?: number; maxBodyBytes?: number } = {}): PlanetLiteClient {
  return new PlanetLiteClient({ registry, token, timeoutMs: opts.timeoutMs ?? REGISTRY_TIMEOUT_MS, maxBodyBytes: opts.maxBodyBytes ?? REGISTRY_MAX_BODY });
}
