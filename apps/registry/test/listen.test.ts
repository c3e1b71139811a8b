// The listen queue a replica asks the kernel for (PLANETLITE_LISTEN_BACKLOG), read back from the
// kernel: for a listening socket, ss shows the backlog as its Send-Q.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { startRegistry } from '../src/index.js';
import { createTestDatabase } from '../../../test/harness/services.ts';

/** The backlog of the socket listening on 127.0.0.1:port, as the kernel holds it. */
function backlogOf(port: number): number {
  const line = execFileSync('ss', ['-Hltn', `sport = :${port}`], { encoding: 'utf8' }).trim();
  return Number(line.split(/\s+/)[2]);
}

describe('the listen queue', () => {
  it('is 4,096 by default (as far as net.core.somaxconn allows), or what PLANETLITE_LISTEN_BACKLOG says', async () => {
    const databaseUrl = await createTestDatabase(inject('pgUrl'), 'listen');
    const somaxconn = Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8'));
    const cases: Array<[NodeJS.ProcessEnv, number, number]> = [
      [{}, 4096, Math.min(4096, somaxconn)],
      [{ PLANETLITE_LISTEN_BACKLOG: '100' }, 100, 100],
    ];
    for (const [env, configured, held] of cases) {
      const registry = await startRegistry({ listen: '127.0.0.1:0', plainHttp: true, databaseUrl, sweeps: false }, env);
      try {
        expect(registry.config.listenBacklog).toBe(configured);
        expect(backlogOf(registry.config.port)).toBe(held);
      } finally {
        await registry.close();
      }
    }
  });
});
