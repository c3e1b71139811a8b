// Which errors answer 503: the real errors of a refused PostgreSQL and Redis, not others.
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
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

  it('takes a database connection refused for want of file descriptors for an overloaded replica', async () => {
    // The real error: a process at its open-files limit connecting to PostgreSQL.
    const script = `const fs = require('node:fs'); const pg = require('pg'); const held = [];
      try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch {}
      new pg.Client({ connectionString: 'postgres://postgres@127.0.0.1:${await freePort()}/x' }).connect()
        .then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })));`;
    const err = JSON.parse(execFileSync('bash', ['-c', 'ulimit -n 64 && exec "$0" -e "$1"', process.execPath, script], { cwd: import.meta.dirname, encoding: 'utf8' }));
    expect(err.code).toBe('EMFILE');
    expect(serviceUnavailable(err)).toMatchObject({ code: 'replica_overloaded', detail: expect.stringContaining('LimitNOFILE') });
  });

  it('leaves database refusals and bugs alone', () => {
    expect(serviceUnavailable({ code: '23505', message: 'duplicate key value violates unique constraint' })).toBeNull();
    expect(serviceUnavailable(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBeNull();
    expect(serviceUnavailable('text')).toBeNull();
  });
});
