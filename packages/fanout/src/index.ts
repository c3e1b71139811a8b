// Change fan-out between registry replicas: Redis pub/sub when configured, in-process otherwise.
import { EventEmitter } from 'node:events';
import { Redis } from 'ioredis';
import type { Logger } from '@planetlite/core';

export type FanoutHandler = (message: string) => void;

export interface Fanout {
  readonly kind: 'redis' | 'memory';
  /** The command connection, for other users of the same Redis (rate limits); absent in memory. */
  readonly redis?: Redis;
  /** False while Redis is unreachable: messages may be lost, so waiters must poll meanwhile. */
  readonly healthy: boolean;
  /** Counts the subscriber's connections: when it moves, messages sent in between may be lost. */
  readonly epoch: number;
  /** Resolves to how many subscriptions the message reached (Redis's count: one per listening replica). */
  publish(channel: string, message: string): Promise<number>;
  /** Resolves, once messages on channel are being delivered, to the function that unsubscribes. */
  subscribe(channel: string, handler: FanoutHandler): Promise<() => void>;
  close(): Promise<void>;
}

const PREFIX = 'planetlite:';

export async function openFanout(opts: { redisUrl?: string | undefined; logger?: Logger }): Promise<Fanout> {
  return opts.redisUrl ? openRedisFanout(opts.redisUrl, opts.logger) : memoryFanout();
}

export function memoryFanout(): Fanout {
  const bus = new EventEmitter();
  bus.setMaxListeners(0);
  return {
    kind: 'memory',
    healthy: true,
    epoch: 1,
    async publish(channel, message) {
      const reached = bus.listenerCount(channel);
      bus.emit(channel, message);
      return reached;
    },
    async subscribe(channel, handler) {
      bus.on(channel, handler);
      return () => bus.off(channel, handler);
    },
    async close() {
      bus.removeAllListeners();
    },
  };
}

/**
 * One publishing and one subscribing connection per replica; local handlers hang off an
 * EventEmitter so that a thousand long-polls cost one Redis subscription per channel.
 */
/** How long a closing fan-out waits for Redis to answer its QUIT. */
const QUIT_WAIT_MS = 2_000;

async function openRedisFanout(url: string, logger?: Logger): Promise<Fanout> {
  // Commands fail at once while Redis is down (no offline queue): a write does not wait on its
  // publish, and a login's rate limit fails closed without delay. The subscriber queues its
  // SUBSCRIBEs and resubscribes by itself when Redis is back.
  const pub = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 3, enableOfflineQueue: false });
  const sub = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: null });
  // One line when a connection is lost and one when it is back, not one per reconnect attempt.
  for (const [connection, c] of [['publisher', pub], ['subscriber', sub]] as const) {
    let down = false;
    c.on('error', (err) => {
      if (!down) logger?.warn({ err, connection }, 'redis unreachable; reconnecting');
      down = true;
    });
    c.on('ready', () => {
      if (down) logger?.info({ connection }, 'redis reachable again');
      down = false;
    });
  }
  // Every SUBSCRIBE in flight listens for the connection's close (below): thousands at once is normal.
  sub.setMaxListeners(0);
  await Promise.all([pub.connect(), sub.connect()]);
  const local = new EventEmitter();
  local.setMaxListeners(0);
  const subscribed = new Map<string, Promise<void>>();
  sub.on('message', (channel: string, message: string) => local.emit(channel.slice(PREFIX.length), message));
  let epoch = 1;
  sub.on('ready', () => epoch++);
  return {
    kind: 'redis',
    redis: pub,
    get healthy() {
      return pub.status === 'ready' && sub.status === 'ready';
    },
    get epoch() {
      return epoch;
    },
    async publish(channel, message) {
      return pub.publish(PREFIX + channel, message);
    },
    async subscribe(channel, handler) {
      local.on(channel, handler);
      let ready = subscribed.get(channel);
      if (!ready) {
        ready = sub.subscribe(PREFIX + channel).then(() => undefined);
        subscribed.set(channel, ready);
      }
      const pending = ready;
      if (sub.status !== 'ready') {
        // Redis down: do not wait for it (the caller polls while healthy is false); the queued
        // SUBSCRIBE runs when Redis is back.
        pending.catch(() => subscribed.get(channel) === pending && subscribed.delete(channel));
      } else {
        try {
          // A SUBSCRIBE in flight when Redis goes away waits for its return: stop waiting then.
          await new Promise<void>((resolve, reject) => {
            const lost = () => resolve();
            sub.once('close', lost);
            pending.then(
              () => (sub.off('close', lost), resolve()),
              (err: unknown) => (sub.off('close', lost), reject(err)),
            );
          });
        } catch (err) {
          subscribed.delete(channel);
          local.off(channel, handler);
          throw err;
        }
      }
      return () => {
        local.off(channel, handler);
        if (local.listenerCount(channel) === 0 && subscribed.get(channel) === ready) {
          subscribed.delete(channel);
          sub.unsubscribe(PREFIX + channel).catch((err: unknown) => logger?.warn({ err, channel }, 'redis unsubscribe failed'));
        }
      };
    },
    async close() {
      local.removeAllListeners();
      // QUIT waits for Redis to answer, and the subscriber queues it while Redis is down: the
      // registry then never stopped on SIGTERM during an outage. A connection that is not up is
      // dropped; one that is gets a moment to say goodbye.
      const end = async (c: Redis) => {
        if (c.status === 'ready') await Promise.race([c.quit(), new Promise((r) => setTimeout(r, QUIT_WAIT_MS).unref())]).catch(() => undefined);
        c.disconnect();
      };
      await Promise.all([end(pub), end(sub)]);
    },
  };
}
