// A node's ssh front door as its agent reports it: stored with a fingerprint the registry computes,
// published with the node to everyone who may see the node, changed and withdrawn by later reports.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, cleanupKeys, makeWorld, ok, testApp, type TestApp } from './helpers.js';

describe('the front door in node reports', () => {
  let t: TestApp;
  let dir: string;
  /** A fresh ed25519 public key and its fingerprint as ssh-keygen prints it. */
  const hostKey = (name: string) => {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'comment dropped', '-f', join(dir, name)]);
    const [type, b64] = readFileSync(join(dir, `${name}.pub`), 'utf8').split(' ');
    return { key: `${type} ${b64}`, fingerprint: execFileSync('ssh-keygen', ['-l', '-f', join(dir, `${name}.pub`)], { encoding: 'utf8' }).split(' ')[1] };
  };
  beforeAll(async () => {
    t = await testApp();
    dir = mkdtempSync(join(tmpdir(), 'pl-frontdoor-'));
  });
  afterAll(async () => {
    await t.close();
    cleanupKeys();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is null until reported, then carries port, key and fingerprint; a new key replaces it and null withdraws it', async () => {
    const w = await makeWorld(t.app);
    const id = w.ids.node;
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.user)).front_door).toBeNull();
    const a = hostKey('a');
    await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [], front_door: { port: 22, host_key: a.key } });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.outsider)).front_door).toEqual({ port: 22, host_key: a.key, fingerprint: a.fingerprint });
    const b = hostKey('b');
    await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [], front_door: { port: 2222, host_key: b.key } });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.user)).front_door).toEqual({ port: 2222, host_key: b.key, fingerprint: b.fingerprint });
    // A report without the field leaves it; null withdraws it.
    await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [] });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.user)).front_door.port).toBe(2222);
    await ok(t.app, 200, 'PUT', `/v1/nodes/${id}/observed-state`, w.node, { slivers: [], front_door: null });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${id}`, w.user)).front_door).toBeNull();
    const changes = (await ok(t.app, 200, 'GET', `/v1/events?node=${id}&type=node.front_door`, w.admin)).events.map((e: any) => e.data);
    expect(changes).toEqual([{ port: 22, fingerprint: a.fingerprint }, { port: 2222, fingerprint: b.fingerprint }, { port: null, fingerprint: null }]);
  });

  it('refuses a malformed report with 400 and takes no unreadable key', async () => {
    const w = await makeWorld(t.app);
    const bad = await call(t.app, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [], front_door: { port: 0, host_key: 'x' } });
    expect(bad.status).toBe(400);
    await ok(t.app, 200, 'PUT', `/v1/nodes/${w.ids.node}/observed-state`, w.node, { slivers: [], front_door: { port: 22, host_key: 'ssh-ed25519 AAAA' } });
    expect((await ok(t.app, 200, 'GET', `/v1/nodes/${w.ids.node}`, w.user)).front_door).toBeNull();
  });
});
