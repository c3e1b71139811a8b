// One pino root logger per process; components take a child with `component` set.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(opts: { name: string; level?: string } = { name: 'planetlite' }): Logger {
  return pino({
    name: opts.name,
    level: opts.level ?? process.env.PLANETLITE_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    redact: { paths: ['req.headers.authorization', '*.password', '*.token', '*.node_key'], censor: '[redacted]' },
  });
}
