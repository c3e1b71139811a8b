// Which errors answer 503: the real errors of a refused PostgreSQL and Redis, not others.
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { Redis } from 'ioredis';
import { freePort } from '../../../../test/harness/services.ts';
import { serviceUnavailable } from './unavailable.js';

async function errorOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => new Error('no error'), (err: unknown) => err);
}

describe('serviceUnavailable', () => {
  it('takes a refused PostgreSQL, a server shutting down and a refused Redis for a passing outage', async () => {
    const port = await freePort();
    const client = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${port}/x` });
    expect(serviceUnavailable(await errorOf(client.connect()))?.code).toBe('database_unavailable');
    expect(serviceUnavailable({ code: '57P01', message: 'terminating connection due to administrator command' })?.code).toBe('database_unavailable');
    expect(serviceUnavailable(new Error('Connection terminated unexpectedly'))?.code).toBe('database_unavailable');
    const redis = new Redis(port, '127.0.0.1', { lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null });
    expect(serviceUnavailable(await errorOf(redis.get('k')))?.code).toBe('redis_unavailable');
    redis.disconnect();
  });

  it('leaves database refusals and bugs alone', () => {
    expect(serviceUnavailable({ code: '23505', message: 'duplicate key value violates unique constraint' })).toBeNull();
    expect(serviceUnavailable(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBeNull();
    expect(serviceUnavailable('text')).toBeNull();
  });
});
