// The registry's fault campaign, bounded (the full one: node scripts/chaos/registry.ts): SIGKILLs
// under concurrent writes on PGlite and on PostgreSQL with fsync on, PostgreSQL restarted under
// load, Redis stopped and started again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, startRedis, type PostgresServer, type RedisServer } from '../harness/services.ts';
import { startRegistryProcess } from '../harness/registry-process.ts';
import { killCampaign, postgresRestart, redisOutage } from '../../scripts/chaos/registry.ts';

let pg: PostgresServer;
let redis: RedisServer;
beforeAll(async () => {
  pg = await startPostgres({ durable: true });
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
  await pg?.stop();
});

describe('registry fault campaign', () => {
  for (const database of ['pglite', 'postgres'] as const) {
    it(`loses no acknowledged write and stores none twice when SIGKILLed under writes (${database})`, async () => {
      const pgUrl = database === 'postgres' ? await pg.createDatabase('chaos_kill') : undefined;
      const f = await killCampaign({ database, ...(pgUrl ? { pgUrl } : {}), kills: 2, clients: 3, killEveryMs: [1_000, 2_000] });
      expect(f.acknowledged).toBeGreaterThan(0);
      expect(f.lost).toEqual([]);
      expect(f.found).toBe(f.acknowledged);
      expect(f.duplicates).toBe(0);
      expect(f.unexpected).toEqual([]);
    }, 900_000);
  }

  it('answers 503 problem+json with Retry-After while PostgreSQL restarts, and recovers in the same process', async () => {
    const f = await postgresRestart({ server: pg, clients: 3, downMs: 2_000 });
    expect(f.answers503).toBeGreaterThan(0);
    expect(f.bad503).toBe(0);
    expect(f.unexpected).toEqual([]);
    expect(f.sameProcess).toBe(true);
    expect(f.lost).toEqual([]);
    expect(f.duplicates).toBe(0);
  }, 600_000);

  it('with Redis stopped, wakes long-polls for every change and refuses logins; with Redis back, both work again', async () => {
    const f = await redisOutage({ pgUrl: await pg.createDatabase('chaos_redis'), redis, changes: 3 });
    // Woken by the change, not by the long-poll's own 50 s timeout.
    expect(f.deliveredDown).toBe(f.changes);
    expect(f.loginsLetIn).toBe(0);
    expect(f.loginAnswersDown).toEqual(['503 redis_unavailable']);
    expect(Number.isFinite(f.loginBackMs)).toBe(true);
    expect(f.deliveredAfter).toBe(f.changes);
  }, 600_000);

  it('stops at once on SIGTERM while Redis is down (a site stopping it during an outage)', async () => {
    // Its own Redis, stopped for good. The fan-out's QUIT used to wait for Redis to come back,
    // so the registry never exited.
    const gone = await startRedis();
    const registry = await startRegistryProcess({ DATABASE_URL: await pg.createDatabase('chaos_stop'), REDIS_URL: gone.url, PLANETLITE_ADMIN_EMAIL: 'admin@stop.test', PLANETLITE_ADMIN_PASSWORD: 'stop-password-1' });
    try {
      await gone.stop();
      // Its connections to Redis closed with the server; a second for it to be reconnecting.
      await new Promise((r) => setTimeout(r, 1000));
      const exited = new Promise<number | string | null>((resolve) => registry.proc.once('exit', (code, signal) => resolve(code ?? signal)));
      registry.proc.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise((resolve) => setTimeout(() => resolve('still running after 10 s'), 10_000))]);
      expect(code).toBe(0);
    } finally {
      if (registry.proc.exitCode === null && registry.proc.signalCode === null) registry.proc.kill('SIGKILL');
    }
  }, 120_000);
});
