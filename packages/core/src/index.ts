// Shared core for every PlanetLite app: logging, the error type that carries a stable code, and
// a comparison of JSON values.
export { createLogger, type Logger } from './logger.js';
export { AppError, isAppError, type ErrorCode } from './errors.js';
export { onStopSignal } from './signals.js';
export { jsonEqual } from './json.js';
export { spreadOf } from './spread.js';
