// A registry that answers garbage or very slowly must not stall the node agent: every request
// has a deadline and a bounded body (src/registry-client.ts), and the desired-state loop goes on.
// A tiny local HTTP server plays the misbehaving registry.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DesiredState } from '@planetlite/api';
import { createLogger } from '@planetlite/core';
import { registryClient } from '../src/registry-client.js';
import { DesiredStateSync } from '../src/sync.js';
import { StateDir } from '../src/state.js';

type Mode = 'hang' | 'drip' | 'garbage' | 'huge' | 'endless' | 'good';
let mode: Mode = 'good';
const modes: Mode[] = [];
let server: Server;
let url: string;
const open = new Set<ServerResponse>();
const nodeId = randomUUID();
const good: DesiredState = { node_id: nodeId, address: '192.0.2.1', port_window: { first: 20000, last: 29999 }, slivers: [] };

beforeAll(async () => {
  server = createServer((req, res) => {
    open.add(res);
    res.on('close', () => open.delete(res));
    const m = modes.shift() ?? mode;
    if (m === 'hang') return; // never answers
    if (m === 'drip') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{');
      const t = setInterval(() => res.write(' '), 100);
      res.on('close', () => clearInterval(t));
      return;
    }
    if (m === 'garbage') return void res.writeHead(200, { 'content-type': 'application/json' }).end('<html>502 Bad Gateway</html>');
    if (m === 'huge') return void res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(10 ** 12) }).end();
    if (m === 'endless') {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = () => { while (res.write(chunk)); };
      res.on('drain', pump);
      pump();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', etag: '"1"' }).end(JSON.stringify(good));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const res of open) res.destroy();
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const client = () => registryClient(url, 'node-key', { timeoutMs: 500, maxBodyBytes: 1024 * 1024 });

describe('the agent against a misbehaving registry', () => {
  it.each([
    ['never answers', 'hang', /^GET \/v1\/nodes\/.*\/desired-state: the registry did not answer within 1 s$/],
    ['sends its body a byte at a time', 'drip', /^GET desired-state: the registry did not answer within 1 s$/],
    ['answers something that is not JSON', 'garbage', /^GET desired-state: the registry answered 200 with a body that is not JSON \("<html>502 Bad Gateway<\/html>"\)$/],
    ['announces a body of a terabyte', 'huge', /^GET desired-state: the registry's answer of 1000000000000 bytes is larger than 1048576$/],
    ['sends a body without end', 'endless', /^GET desired-state: the registry's answer is larger than 1048576 bytes$/],
  ] as const)('fails a request, in one line, to a registry that %s', async (_what, m, why) => {
    mode = m;
    const err = await client().desiredState(nodeId).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(why);
    mode = 'good';
  });

  it('keeps pulling the desired state through hangs and garbage, and carries out the first sound document', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pl-sync-'));
    const got: DesiredState[] = [];
    modes.push('hang', 'garbage', 'drip', 'endless');
    const sync = new DesiredStateSync({
      client: client(), nodeId, state: new StateDir(dir), log: createLogger({ name: 'sync', level: 'silent' }),
      onDesired: (doc) => void got.push(doc), waitSeconds: 0, backoffMs: [50, 100],
    });
    try {
      await sync.start();
      for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
      expect(got[0]).toEqual(good);
      expect(modes).toEqual([]);
    } finally {
      await sync.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
