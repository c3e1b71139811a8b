// The one client of the v1 API in the page: same origin, the session cookie, the CSRF header.
import { ApiError, CSRF_HEADER, CSRF_HEADER_VALUE, PlanetLiteClient } from '@planetlite/api/browser';

export const api = new PlanetLiteClient({ registry: location.origin, headers: { [CSRF_HEADER]: CSRF_HEADER_VALUE } });

/** Listeners for "the session is gone" (401 anywhere): the app goes back to the login page. */
const onEnded = new Set<() => void>();
export function onSessionEnded(fn: () => void): () => void {
  onEnded.add(fn);
  return () => onEnded.delete(fn);
}

/** An error as the page shows it: the API's words and its code. */
export function describe(err: unknown): { text: string; code: string | null } {
  if (err instanceof ApiError) return { text: err.problem.detail || err.problem.title, code: err.code };
  if (err instanceof TypeError) return { text: 'The registry cannot be reached; check your network and try again.', code: 'network_error' };
  return { text: err instanceof Error ? err.message : String(err), code: null };
}

/** Runs an API call; a 401 ends the session in the page as well. */
export async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && (err.code === 'token_invalid' || err.code === 'unauthorized')) for (const f of onEnded) f();
    throw err;
  }
}

export { ApiError };
