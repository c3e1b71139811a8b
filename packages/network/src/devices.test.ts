// Link reads that the kernel refuses as interrupted (links changed during the dump) are read again.
import { describe, expect, it } from 'vitest';
import { CommandError, type RunOptions, type RunResult } from '@planetlite/host';
import { readLinks, readLinksOf } from './nftables/devices.js';

const LINK = JSON.stringify([{ ifname: 'pls1', ifalias: 'sliver a', flags: ['UP'], linkinfo: { info_kind: 'veth' }, addr_info: [{ family: 'inet', local: '10.0.0.1', prefixlen: 30 }] }]);
const INTERRUPTED = 'Dump was interrupted and may be inconsistent.';

/** An exec that answers each call with the next of `answers` (an Error is thrown). */
function scripted(answers: Array<RunResult | Error>) {
  const calls: string[][] = [];
  const exec = async (cmd: string, args: readonly string[], _o?: RunOptions): Promise<RunResult> => {
    calls.push([cmd, ...args]);
    const a = answers.shift();
    if (!a) throw new Error('no more answers');
    if (a instanceof Error) throw a;
    return a;
  };
  return { exec, calls };
}

describe('link reads', () => {
  it('read again when a dump was interrupted, as a failure or as a warning', async () => {
    const whole = scripted([new CommandError('ip', ['-d', '-j', 'addr', 'show'], 1, INTERRUPTED), { stdout: LINK, stderr: '' }]);
    expect([...(await readLinks(whole.exec)).keys()]).toEqual(['pls1']);
    expect(whole.calls).toHaveLength(2);

    const some = scripted([{ stdout: LINK, stderr: INTERRUPTED, exitCode: 1 }, { stdout: LINK, stderr: 'Device "pls2" does not exist.\nCommand failed -:2', exitCode: 1 }]);
    expect((await readLinksOf(some.exec, ['pls1', 'pls2'])).get('pls1')).toMatchObject({ alias: 'sliver a', up: true, ipv4: ['10.0.0.1/30'] });
    expect(some.calls).toHaveLength(2);
  });

  it('give up after a few interrupted dumps, and at once on any other failure', async () => {
    const always = scripted(Array.from({ length: 9 }, () => ({ stdout: LINK, stderr: INTERRUPTED, exitCode: 1 })));
    await expect(readLinksOf(always.exec, ['pls1'])).rejects.toThrow(/could not read links: Dump was interrupted/);
    expect(always.calls).toHaveLength(5);
    const other = scripted([new CommandError('ip', ['-d', '-j', 'addr', 'show'], 255, 'Cannot open netlink socket'), { stdout: LINK, stderr: '' }]);
    await expect(readLinks(other.exec)).rejects.toThrow(/netlink/);
    expect(other.calls).toHaveLength(1);
  });
});
