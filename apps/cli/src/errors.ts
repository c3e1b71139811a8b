// Errors the CLI raises itself, and the one-line rendering of any error for stderr.
import { ApiError } from '@planetlite/api';

/** A failure worth one line to the user; exit code 1. */
export class CliError extends Error {
  override readonly name = 'CliError';
}

/** fetch could not get an answer from the registry at all. */
export class RegistryUnreachableError extends Error {
  override readonly name = 'RegistryUnreachableError';
  constructor(readonly registry: string, readonly reason: string) {
    super(`cannot reach the registry at ${registry} (${reason}): is the registry running? set --registry or PLANETLITE_REGISTRY`);
  }
}

export const NOT_LOGGED_IN = 'not logged in: run planetlite login --registry URL --email ...';

/** The text after "planetlite: " for any thrown value: one line, never a stack. */
export function formatError(err: unknown): string {
  let text: string;
  if (err instanceof ApiError) {
    const message = err.message || err.problem.title || `HTTP ${err.status}`;
    text = `${message} (${err.code})`;
    if (err.status === 401 && err.code !== 'invalid_credentials') text += ': run planetlite login again';
  } else if (err instanceof SyntaxError) {
    text = `the registry answered something that is not JSON (${err.message}); is --registry the right URL?`;
  } else if (err instanceof Error) {
    text = err.message || err.name;
  } else {
    text = String(err);
  }
  return oneLine(text);
}

/** Folds newlines and runs of whitespace so an error is always exactly one line. */
export function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** Why a fetch failed, as short as possible: the socket error code when there is one. */
export function networkReason(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return 'no answer in time';
  const cause = err instanceof Error ? (err as Error & { cause?: unknown }).cause : undefined;
  if (cause && typeof cause === 'object') {
    const c = cause as { code?: unknown; message?: unknown; errors?: unknown };
    if (typeof c.code === 'string') return c.code;
    // Node reports "connection refused on every address" as an AggregateError.
    if (Array.isArray(c.errors)) {
      const first = c.errors[0] as { code?: unknown } | undefined;
      if (typeof first?.code === 'string') return first.code;
    }
    if (typeof c.message === 'string' && c.message) return c.message;
  }
  return err instanceof Error ? err.message : String(err);
}
