// Which failures mean "a service the registry needs is down for a moment" (PostgreSQL restarting,
// Redis stopped) rather than a bug: those answer 503 with Retry-After, and the next request,
// which reconnects by itself, normally succeeds.
import type { ErrorCode } from '@planetlite/core';

/** Seconds a client is told to wait before trying again. */
export const RETRY_AFTER_SECONDS = 2;

// SQLSTATE classes 08 (connection exception) and 57P (operator intervention: admin/crash
// shutdown, cannot connect now), and the node-level errors of a refused or cut connection.
const PG_UNAVAILABLE = /^(08|57P0[1-3])/;
const NET_UNAVAILABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTCONN']);
const PG_CUT = /^Connection terminated|^Client has encountered a connection error|^timeout exceeded when trying to connect/;
// ioredis: a command refused while disconnected (offline queue off) or retried out.
const REDIS_CUT = /^Stream isn't writeable|^Connection is closed|enableOfflineQueue options is false/;

// The process (or the host) has no file descriptor left: every connection is one, so a replica
// holding thousands of agents' long-polls cannot open a database connection more.
const OUT_OF_FILES = new Set(['EMFILE', 'ENFILE']);

/** The problem to answer for err if it is a passing outage of PostgreSQL or Redis, or of this
 * replica's file descriptors, else null. */
export function serviceUnavailable(err: unknown): { code: ErrorCode; detail: string } | null {
  if (!err || typeof err !== 'object') return null;
  const { code, name, message } = err as { code?: unknown; name?: unknown; message?: unknown };
  const text = typeof message === 'string' ? message : '';
  if (typeof code === 'string' && OUT_OF_FILES.has(code)) {
    return { code: 'replica_overloaded', detail: `this registry replica has no file descriptor left (its open connections are at its limit: LimitNOFILE); try again in ${RETRY_AFTER_SECONDS} s` };
  }
  if (name === 'MaxRetriesPerRequestError' || REDIS_CUT.test(text)) {
    return { code: 'redis_unavailable', detail: `Redis (rate limits and change fan-out) is unreachable; try again in ${RETRY_AFTER_SECONDS} s` };
  }
  if ((typeof code === 'string' && (PG_UNAVAILABLE.test(code) || NET_UNAVAILABLE.has(code))) || PG_CUT.test(text)) {
    return { code: 'database_unavailable', detail: `the database is unreachable or restarting; try again in ${RETRY_AFTER_SECONDS} s` };
  }
  return null;
}
