// The state dir's copy of the desired-state document: written from the registry's own text, or
// serialised when there is none, and read back the same either way.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { DesiredState } from '@planetlite/api';
import { StateDir } from '../src/state.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stateDir(): StateDir {
  const dir = mkdtempSync(join(tmpdir(), 'pl-state-'));
  dirs.push(dir);
  return new StateDir(dir);
}

describe('the cached desired state', () => {
  // As a registry sends it: its own spacing and key order, and text that JSON escapes.
  const text = '{ "node_id": "n-1", "address": "192.0.2.1",\n  "port_window": {"first": 20000, "last": 29999}, "slivers": [{"id": "s-1", "slice": "lab_é\\u2028\\"q\\"", "keys": ["ssh-ed25519 AAAA a@b"]}] }';
  const doc = JSON.parse(text) as DesiredState;

  it('writes the text as received, and reads back the same document, ETag and time', () => {
    const s = stateDir();
    s.writeDesired({ etag: '"abc"', fetched_at: '2026-12-06T15:00:00.000Z', state: doc }, text);
    expect(s.readDesired()).toEqual({ etag: '"abc"', fetched_at: '2026-12-06T15:00:00.000Z', state: doc });
    expect(readFileSync(s.desiredFile, 'utf8')).toContain(text);
  });

  it('serialises the document when there is no text, with a null ETag', () => {
    const s = stateDir();
    s.writeDesired({ etag: null, fetched_at: '2026-12-06T15:00:00.000Z', state: doc });
    expect(s.readDesired()).toEqual({ etag: null, fetched_at: '2026-12-06T15:00:00.000Z', state: doc });
  });
});
