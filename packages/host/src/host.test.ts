// The command wrapper and the undo list, against real commands.
import { describe, expect, it } from 'vitest';
import { CommandError, Reverter, run, tryRun } from './index.js';

describe('run', () => {
  it('passes arguments as an array, never through a shell', async () => {
    const r = await run('printf', ['%s|', 'a b', '$(echo no)', ';rm -rf /']);
    expect(r.stdout).toBe('a b|$(echo no)|;rm -rf /|');
  });
  it('feeds input and returns stderr', async () => {
    expect((await run('cat', [], { input: 'hello' })).stdout).toBe('hello');
  });
  it('throws a CommandError with command, exit code and stderr', async () => {
    const err = await run('sh', ['-c', 'echo broken >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CommandError);
    const ce = err as CommandError;
    expect(ce.command).toBe('sh');
    expect(ce.exitCode).toBe(3);
    expect(ce.stderr).toBe('broken');
    expect(ce.message).toMatch(/^sh -c .* exited with 3: broken$/);
  });
  it('names a missing tool and a timeout', async () => {
    await expect(run('no-such-tool-planetlite', [])).rejects.toThrow(/not installed/);
    await expect(run('sleep', ['5'], { timeoutMs: 100 })).rejects.toThrow(/timed out/);
    expect(await tryRun('false', [])).toBeNull();
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
