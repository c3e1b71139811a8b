import { existsSync } from 'node:fs';
import net from 'node:net';
import { Redis } from 'ioredis';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { createTestDatabase, freePort, isPortListening, startPostgres, startRedis } from './services.js';

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

/** True if we can bind the port ourselves, i.e. nothing holds it any more. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

describe('provided PostgreSQL (global setup)', () => {
  const pgUrl = inject('pgUrl');

  it('has a loopback URL and accepts a query', async () => {
    expect(pgUrl).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
    const rows = await query<{ one: number }>(pgUrl, 'select 1 as one');
    expect(rows).toEqual([{ one: 1 }]);
  });

  it('createTestDatabase makes isolated databases', async () => {
    const a = await createTestDatabase(pgUrl, 'iso');
    const b = await createTestDatabase(pgUrl, 'iso');
    expect(a).not.toBe(b);

    const [dbA] = await query<{ db: string }>(a, 'select current_database() as db');
    const [dbB] = await query<{ db: string }>(b, 'select current_database() as db');
    expect(dbA?.db).toMatch(/^iso_[0-9a-f]{12}$/);
    expect(dbB?.db).toMatch(/^iso_[0-9a-f]{12}$/);
    expect(dbA?.db).not.toBe(dbB?.db);

    await query(a, 'create table only_in_a (id int primary key)');
    await query(a, 'insert into only_in_a values (1)');
    const inA = await query<{ t: string | null }>(a, "select to_regclass('public.only_in_a')::text as t");
    const inB = await query<{ t: string | null }>(b, "select to_regclass('public.only_in_a')::text as t");
    expect(inA).toEqual([{ t: 'only_in_a' }]);
    expect(inB).toEqual([{ t: null }]);
  });
});

describe('provided Redis (global setup)', () => {
  it('SET then GET round-trips', async () => {
    const redisUrl = inject('redisUrl');
    expect(redisUrl).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
    const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      const key = `harness:${process.pid}:${Date.now()}`;
      expect(await redis.set(key, 'hello', 'EX', 60)).toBe('OK');
      expect(await redis.get(key)).toBe('hello');
      expect(await redis.get(`${key}:missing`)).toBeNull();
    } finally {
      redis.disconnect();
    }
  });
});

describe('startPostgres / startRedis', () => {
  it('freePort returns a bindable port', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(await canListen(port)).toBe(true);
  });

  it('startPostgres serves queries and stop() frees its port and removes its dir', async () => {
    const server = await startPostgres();
    let stopped = false;
    try {
      expect(server.url).toBe(`postgres://postgres@127.0.0.1:${server.port}/postgres`);
      expect(existsSync(server.dir)).toBe(true);
      expect(await isPortListening(server.port)).toBe(true);
      const db = await server.createDatabase('own');
      const [row] = await query<{ db: string }>(db, 'select current_database() as db');
      expect(row?.db).toMatch(/^own_[0-9a-f]{12}$/);

      await server.stop();
      stopped = true;
      expect(await isPortListening(server.port)).toBe(false);
      expect(await canListen(server.port)).toBe(true);
      expect(existsSync(server.dir)).toBe(false);
      await expect(query(server.url, 'select 1')).rejects.toThrow();
      await server.stop(); // idempotent
    } finally {
      if (!stopped) await server.stop();
    }
  });

  it('startRedis answers PING and stop() frees its port', async () => {
    const server = await startRedis();
    let stopped = false;
    try {
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      const redis = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
      try {
        await redis.connect();
        expect(await redis.ping()).toBe('PONG');
      } finally {
        redis.disconnect();
      }

      await server.stop();
      stopped = true;
      expect(await isPortListening(server.port)).toBe(false);
      expect(await canListen(server.port)).toBe(true);
      await server.stop(); // idempotent
    } finally {
      if (!stopped) await server.stop();
    }
  });
});
