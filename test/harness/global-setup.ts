// Vitest globalSetup (runs once per `vitest run`, in the main process): starts one
// throwaway PostgreSQL and one Redis server for the whole run and hands their URLs to the
// tests, which read them with `inject('pgUrl')` / `inject('redisUrl')`. A test that needs
// its own database calls `createTestDatabase(inject('pgUrl'), 'prefix')` from ./services.ts.
import type { TestProject } from 'vitest/node';
import { startPostgres, startRedis } from './services.js';
import type { PostgresServer, RedisServer } from './services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Superuser URL of the run's PostgreSQL server: postgres://postgres@127.0.0.1:PORT/postgres */
    pgUrl: string;
    /** URL of the run's Redis server: redis://127.0.0.1:PORT */
    redisUrl: string;
  }
}

export default async function setup(project: Pick<TestProject, 'provide'>): Promise<() => Promise<void>> {
  const [pgResult, redisResult] = await Promise.allSettled([startPostgres(), startRedis()]);
  const pgServer: PostgresServer | undefined = pgResult.status === 'fulfilled' ? pgResult.value : undefined;
  const redis: RedisServer | undefined = redisResult.status === 'fulfilled' ? redisResult.value : undefined;

  const teardown = async (): Promise<void> => {
    await Promise.allSettled([pgServer?.stop(), redis?.stop()]);
  };

  if (!pgServer || !redis) {
    await teardown();
    const errors = [pgResult, redisResult]
      .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
      .map((r) => (r.reason instanceof Error ? r.reason.message : String(r.reason)));
    throw new Error(`test services failed to start:\n${errors.join('\n')}`);
  }

  project.provide('pgUrl', pgServer.url);
  project.provide('redisUrl', redis.url);
  // Also as env vars, for code under test that reads its config from the environment
  // (test workers are forked after this and inherit it).
  process.env.PLANETLITE_TEST_PG_URL = pgServer.url;
  process.env.PLANETLITE_TEST_REDIS_URL = redis.url;

  return teardown;
}
