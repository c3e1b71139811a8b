import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const signals = fileURLToPath(new URL('./signals.ts', import.meta.url));

/** A process that stops cleanly on its first signal while execa runs a host command. */
function daemon(register: 'onStopSignal' | 'once') {
  const script = `
    import { execa } from 'execa';
    import { onStopSignal } from ${JSON.stringify(signals)};
    const stop = () => setTimeout(() => process.exit(0), 100);
    if (${JSON.stringify(register)} === 'once') { process.once('SIGINT', stop); process.once('SIGTERM', stop); }
    else onStopSignal(stop);
    const cmd = execa('sleep', ['5']).catch(() => {});
    console.log('ready');
    await cmd;
  `;
  return spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
}

async function stoppedWhileCommandRuns(register: 'onStopSignal' | 'once') {
  const p = daemon(register);
  await once(p.stdout!, 'data');
  p.kill('SIGTERM');
  const [code, signal] = await once(p, 'exit');
  return { code, signal };
}

describe('onStopSignal', () => {
  it('stops cleanly on SIGTERM while a host command is in flight', async () => {
    expect(await stoppedWhileCommandRuns('onStopSignal')).toEqual({ code: 0, signal: null });
  });

  // The reason it exists: with process.once, execa's signal-exit re-sends the signal and kills.
  it('where process.once would have been killed by the signal', async () => {
    expect(await stoppedWhileCommandRuns('once')).toEqual({ code: null, signal: 'SIGTERM' });
  });
});
