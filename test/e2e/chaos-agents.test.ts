// The agents' fault campaign, short (scripts/chaos/agents.ts runs the long one): 12 SIGKILLs of
// agents at random moments during sliver churn on a three-node testbed; every sliver then reaches
// its desired state, live memory limit included, and once everything is deleted no node keeps
// anything of a sliver (test/harness/leaks.ts). Addresses 198.18.50-59, sliver subnets
// 10.180-189.n.0/24 (shared with converge.test.ts: never run both at once).
import { describe, expect, inject, it } from 'vitest';
import { runAgentChaos } from '../harness/agent-chaos.ts';
import { createTestDatabase } from '../harness/services.ts';

describe('agents killed at random moments during churn', () => {
  it('converge, and leave nothing once everything is deleted', async () => {
    const f = await runAgentChaos({ kills: 12, databaseUrl: await createTestDatabase(inject('pgUrl'), 'chaos_agents'), say: (l) => console.log(l) });
    console.log(JSON.stringify({ ...f, leakLines: f.leakLines.slice(0, 20) }));
    expect(f.kills).toBe(12);
    expect(f.created).toBeGreaterThan(3);
    expect(f.notConverged).toEqual([]);
    expect(f.converged).toBe(f.slivers);
    // The leak check saw the slivers while they were there, kind by kind.
    if (f.slivers > 0) for (const kind of ['containers', 'links', 'nft chains', 'subvolumes', 'ledger records'] as const) expect(f.before[kind], kind).toBeGreaterThan(0);
    expect(f.leakLines).toEqual([]);
  }, 900_000);
});
