// The hooks reach into webtorrent's private members; an upgrade that renames or drops one would
// turn a hook off without a word (each does nothing when its member is missing). This finds every
// member the hooks use on a real torrent and a real wire of the installed webtorrent, and checks
// that a hook does take effect.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import WebTorrent, { type Torrent } from 'webtorrent';
// @ts-expect-error bittorrent-protocol (webtorrent's wire) ships no types; the test only makes one.
import Wire from 'bittorrent-protocol';
import { HOOKS_APPLY, TORRENT_MEMBERS, WEBTORRENT_VERSION, WIRE_MEMBERS, decideRequests } from './hooks.js';

describe('the webtorrent hooks', () => {
  it('apply to the installed webtorrent, whose torrents and wires have every member they use', async () => {
    expect(WEBTORRENT_VERSION).toMatch(/^\d+\.\d+\.\d+/);
    expect(HOOKS_APPLY).toBe(true);
    const client = new WebTorrent({ dht: false, lsd: false, natUpnp: false, natPmp: false, utp: false, tracker: false });
    try {
      const data = Object.assign(randomBytes(64 * 1024), { name: 'hooks.bin' });
      const torrent = await new Promise<Torrent>((resolve) => client.seed(data, { announce: [] }, resolve));
      for (const m of TORRENT_MEMBERS) expect.soft((torrent as unknown as Record<string, unknown>)[m], `torrent.${m}`).toBeDefined();
      const wire = new Wire();
      try {
        for (const m of WIRE_MEMBERS) expect.soft((wire as Record<string, unknown>)[m], `wire.${m}`).toBeDefined();
      } finally {
        wire.destroy();
      }
    } finally {
      await new Promise<void>((resolve) => client.destroy(() => resolve()));
    }
  });

  it('lets a policy refuse a request (decideRequests)', () => {
    const calls: string[] = [];
    const wire = {
      peerId: 'ab', hasFast: true, amChoking: false,
      _onRequest: (index: number) => calls.push(`serve ${index}`),
      reject: (index: number) => calls.push(`reject ${index}`),
    };
    decideRequests(wire as never, (index) => index % 2 === 0);
    (wire._onRequest as (i: number, o: number, l: number) => void)(2, 0, 16384);
    (wire._onRequest as (i: number, o: number, l: number) => void)(3, 0, 16384);
    expect(calls).toEqual(['serve 2', 'reject 3']);
  });
});
