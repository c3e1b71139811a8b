// The front door's table of slivers: the agent sends it whole before and after every pass, so a
// new table parses only the key lines the last one did not hold (on a node of 2,000 slivers,
// parsing every line of every table took CPU from the builds).
import { afterEach, describe, expect, it, vi } from 'vitest';
import ssh2 from 'ssh2';
import { FrontDoorServer, type FrontDoorEntry } from '../src/frontdoor/server.js';

const quiet = { info: () => undefined, warn: () => undefined, debug: () => undefined };
const pub = () => ssh2.utils.generateKeyPairSync('ed25519', { comment: 'member@lab' }).public;

function entry(n: number, keys: string[]): FrontDoorEntry {
  return { slice: `lab_exp${n}`, sliver: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`, address: `10.0.0.${4 * n + 2}`, keys };
}

afterEach(() => vi.restoreAllMocks());

describe('the front door table', () => {
  it('parses a key line once while tables keep it, and again once a table dropped it', async () => {
    const host = ssh2.utils.generateKeyPairSync('ed25519');
    const server = new FrontDoorServer({ hostKey: host.private, clientKey: host.private, log: quiet, onLogin: () => undefined });
    try {
      const [a, b, c, d] = [pub(), pub(), pub(), pub()];
      const parse = vi.spyOn(ssh2.utils, 'parseKey');
      const parsed = () => parse.mock.calls.map(([line]) => line);
      // A key shared by two slices is parsed once; a line that is no key is remembered as such.
      server.setTable([entry(1, [a, b]), entry(2, [b, 'not a key'])]);
      expect(parsed().sort()).toEqual([a, b, 'not a key'].sort());
      parse.mockClear();
      // The next change adds one sliver: only its new key is parsed.
      server.setTable([entry(1, [a, b]), entry(2, [b, 'not a key']), entry(3, [c])]);
      expect(parsed()).toEqual([c]);
      parse.mockClear();
      // b leaves with both its slices, d comes: b is forgotten, and parsed again when it returns.
      server.setTable([entry(1, [a]), entry(3, [c, d])]);
      expect(parsed()).toEqual([d]);
      parse.mockClear();
      server.setTable([entry(1, [a, b])]);
      expect(parsed()).toEqual([b]);
    } finally {
      await server.close();
    }
  });
});
