// The command wrapper and the undo list, against real commands.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandError, commandCount, Coprocess, errorFields, missingTools, requireTools, Reverter, run, spawnDetached, tryRun, useForker } from './index.js';

for (const how of ['spawn', 'forker'] as const) {
  describe(`run (${how})`, () => {
    beforeAll(() => useForker(how === 'forker'));
    afterAll(() => useForker(false));

    it('passes arguments as an array, never through a shell', async () => {
      const r = await run('printf', ['%s|', 'a b', '$(echo no)', ';rm -rf /']);
      expect(r.stdout).toBe('a b|$(echo no)|;rm -rf /|');
    });
    it('feeds input, gives no stdin without it, and returns stderr', async () => {
      expect((await run('cat', [], { input: 'hello' })).stdout).toBe('hello');
      expect((await run('cat', [])).stdout).toBe('');
      expect((await run('sh', ['-c', 'echo out; echo err >&2'])).stderr).toBe('err');
    });
    it('runs in cwd with env added to the process environment', async () => {
      const r = await run('sh', ['-c', 'echo "$PLANETLITE_T $HOME"; pwd'], { cwd: '/tmp', env: { PLANETLITE_T: 'x' } });
      expect(r.stdout).toBe(`x ${process.env.HOME}\n/tmp`);
    });
    it('throws a CommandError with command, exit code and stderr, or answers an allowed code', async () => {
      const err = await run('sh', ['-c', 'echo broken >&2; exit 3']).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CommandError);
      const ce = err as CommandError;
      expect(ce.command).toBe('sh');
      expect(ce.exitCode).toBe(3);
      expect(ce.stderr).toBe('broken');
      expect(ce.message).toMatch(/^sh -c .* exited with 3: broken$/);
      expect(await run('sh', ['-c', 'echo some; exit 1'], { allowExit: [1] })).toEqual({ stdout: 'some', stderr: '', exitCode: 1 });
    });
    it('names a missing tool and a timeout', async () => {
      await expect(run('no-such-tool-planetlite', [])).rejects.toThrow(/not installed/);
      await expect(run('sleep', ['5'], { timeoutMs: 100 })).rejects.toThrow(/timed out/);
      expect(await tryRun('false', [])).toBeNull();
    });
    it('counts each command once', async () => {
      const before = commandCount();
      await Promise.all([run('true', []), run('true', [])]);
      expect(commandCount() - before).toBe(2);
    });
  });
}

describe('the command forker', () => {
  beforeAll(() => useForker(true));
  afterAll(() => useForker(false));

  it('does not hold a short command behind a long one', async () => {
    const order: string[] = [];
    await Promise.all([run('sleep', ['0.5']).then(() => order.push('long')), run('true', []).then(() => order.push('short'))]);
    expect(order).toEqual(['short', 'long']);
  });
  it('fails the commands of a forker that died, without quoting its requests, and starts it again', async () => {
    // The forker is the parent of the commands it starts.
    const err = await run('sh', ['-c', 'kill -9 $PPID; sleep 5']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    expect((err as Error).message).toMatch(/^sh -c kill -9 \$PPID; sleep 5 was lost: the command forker ended/);
    expect((err as Error).message).not.toContain('PATH');
    expect((await run('echo', ['again'])).stdout).toBe('again');
  });
  it('keeps output that is large or not UTF-8', async () => {
    const big = await run('head', ['-c', '3000000', '/dev/zero']);
    expect(big.stdout.length).toBe(3_000_000);
    expect((await run('printf', ['a\\377b'])).stdout).toBe('a\ufffdb');
  });
});

describe('Reverter', () => {
  it('undoes registered steps newest first when the change fails, and nothing when it succeeds', async () => {
    const log: string[] = [];
    await expect(
      Reverter.wrap(async (r) => {
        log.push('a');
        r.add(() => log.push('undo a'));
        log.push('b');
        r.add(async () => {
          log.push('undo b');
          throw new Error('undo b failed');
        });
        throw new Error('step c failed');
      }),
    ).rejects.toThrow('step c failed');
    expect(log).toEqual(['a', 'b', 'undo b', 'undo a']);
    const kept = await Reverter.wrap(async (r) => {
      r.add(() => log.push('never'));
      return 42;
    });
    expect(kept).toBe(42);
    expect(log).not.toContain('never');
  });
});

describe('host tools', () => {
  it('finds what is on PATH and names each missing tool with its Debian package, in the caller\'s error type', async () => {
    expect(await missingTools(['sh', 'nft', 'planetlite-no-such-tool'])).toEqual(['planetlite-no-such-tool']);
    await expect(requireTools(['sh', 'tar'], 'x')).resolves.toBeUndefined();
    class FamilyError extends Error {}
    const err = await requireTools(['lxc-start', 'planetlite-no-such-tool', 'sh'], 'the test driver', (m) => new FamilyError(m)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FamilyError);
    expect((err as Error).message).toBe('the test driver needs host tools that are not on PATH: planetlite-no-such-tool (Debian package unknown); run scripts/setup.sh');
    const onlyBin = await missingTools(['nft', 'lxc-start'], '/nonexistent');
    expect(onlyBin).toEqual(['nft', 'lxc-start']);
  });
});

describe('errorFields', () => {
  it("keeps a failed command's command line, exit code and stderr, also behind a driver's error", async () => {
    const ce = await run('sh', ['-c', 'echo no such device >&2; exit 2']).catch((e: unknown) => e);
    class DriverError extends Error {
      readonly code = 'start_failed';
    }
    const wrapped = new DriverError('sliver x failed to start', { cause: ce });
    expect(errorFields(wrapped)).toEqual({ err: 'sliver x failed to start', code: 'start_failed', command: 'sh -c echo no such device >&2; exit 2', exit_code: 2, stderr: 'no such device' });
    expect(errorFields('plain')).toEqual({ err: 'plain' });
  });
});

describe('spawnDetached', () => {
  it('starts a process in its own session that writes to its log, and reports its exit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pl-host-'));
    try {
      const log = join(dir, 'out.log');
      const p = spawnDetached(['sh', '-c', 'echo sid=$(ps -o sid= -p $$ | tr -d " ") pid=$$; exit 7'], { log, cwd: dir });
      expect(await p.exited).toBe(7);
      const m = /sid=(\d+) pid=(\d+)/.exec(readFileSync(log, 'utf8'));
      expect(m?.[1]).toBe(m?.[2]); // its own session leader: the agent's end does not end it
      expect(Number(m?.[2])).toBe(p.pid);
      expect((await spawnDetached(['planetlite-no-such-tool'], { log }).exited)).toBeNull();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('Coprocess', () => {
  // A helper that answers {"ok": true, "n": …} in order, an error for "fail", and exits for "die".
  const script = `
    const rl = require('node:readline').createInterface({ input: process.stdin });
    rl.on('line', (l) => {
      const r = JSON.parse(l);
      if (r.die) process.exit(3);
      process.stdout.write(JSON.stringify(r.fail ? { error: 'asked to fail' } : { ok: true, n: r.n, pid: process.pid }) + '\\n');
    });`;

  it('answers requests in order from one process, counts each as a command, and starts again after it died', async () => {
    const helper = new Coprocess([process.execPath, '-e', script]);
    const before = commandCount();
    const answers = await Promise.all([1, 2, 3].map((n) => helper.request({ n })));
    expect(answers.map((a) => a.n)).toEqual([1, 2, 3]);
    expect(new Set(answers.map((a) => a.pid)).size).toBe(1);
    expect(commandCount() - before).toBe(3);
    const failed = await helper.request({ fail: true }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(CommandError);
    expect((failed as Error).message).toMatch(/asked to fail/);
    const died = await helper.request({ die: true }).catch((e: unknown) => e);
    expect((died as CommandError).exitCode).toBe(3);
    const again = await helper.request({ n: 4 });
    expect(again.n).toBe(4);
    expect(again.pid).not.toBe(answers[0]!.pid);
    helper.close();
  });

  it('kills a helper that does not answer in time, and starts it again for the next request', async () => {
    const helper = new Coprocess([process.execPath, '-e', script.replace("if (r.die) process.exit(3);", 'if (r.hang) return;')], { timeoutMs: 300 });
    const first = await helper.request({ n: 1 });
    const hung = await helper.request({ hang: true }).catch((e: unknown) => e);
    expect(hung).toBeInstanceOf(CommandError);
    expect((hung as CommandError).stderr).toMatch(/no answer within 300 ms/);
    const next = await helper.request({ n: 2 });
    expect(next.n).toBe(2);
    expect(next.pid).not.toBe(first.pid);
    helper.close();
  });

  it('names a helper that is not installed', async () => {
    const err = await new Coprocess(['/nonexistent/helper']).request({}).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/not installed/);
  });
});
