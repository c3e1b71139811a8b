// A registry that a whole fleet reconnects to at once accepts connections late: a connection can
// wait many seconds in its listen queue before its TLS handshake. An agent that gave up on it
// after undici's default 10 s left it in that queue for the registry to serve to nobody, and
// tried again at the back of the same queue: with 10,000 agents some never got through
// (docs/benchmarks.md, "10,000 agents that reconnect at once"). The agent now waits up to 60 s
// for a connection to open, within its request's own timeout. Here a proxy in front of a real
// HTTPS registry holds each new connection 11 s before it passes a byte either way.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trustRegistry } from '@planetlite/api';
import { startRegistry, type RunningRegistry } from '@planetlite/registry';
import { registryClient } from '../src/registry-client.js';

const HOLD_MS = 11_000;
let dir: string;
let registry: RunningRegistry;
let proxy: Server;
let proxyUrl: string;
const sockets = new Set<Socket>();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pl-late-accept-'));
  registry = await startRegistry({ listen: '127.0.0.1:0', dataDir: join(dir, 'registry'), adminEmail: 'admin@late.test', adminPassword: 'late-accept-password', sweeps: false, logLevel: 'silent' });
  const target = new URL(registry.url);
  proxy = createServer({ pauseOnConnect: true }, (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => client.destroy());
    setTimeout(() => {
      if (client.destroyed) return;
      const upstream = connect(Number(target.port), target.hostname, () => {
        client.pipe(upstream).pipe(client);
        client.resume();
      });
      sockets.add(upstream);
      upstream.on('close', () => (sockets.delete(upstream), client.destroy()));
      upstream.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
    }, HOLD_MS);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  proxyUrl = `https://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
}, 60_000);

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  await registry?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a registry that accepts late', () => {
  it("is waited for past undici's 10 s connect timeout, within the request's own", async () => {
    trustRegistry(proxyUrl, registry.ca!);
    const client = registryClient(proxyUrl);
    const t0 = Date.now();
    // Any request will do: it opens the connection the proxy holds.
    const res = await client.raw('GET', '/healthz');
    expect(res.status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(HOLD_MS - 100);
  }, 45_000);
});
