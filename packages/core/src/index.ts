// Shared core for every PlanetLite app: logging and the error type that carries a stable code.
export { createLogger, type Logger } from './logger.js';
export { AppError, isAppError, type ErrorCode } from './errors.js';
export { onStopSignal } from './signals.js';
