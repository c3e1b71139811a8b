// Plain values of the v1 contract, apart from the schemas so a browser bundle can take them
// without TypeBox.

/** Largest console tail a node uploads for one sliver, in bytes of UTF-8. */
export const SLIVER_CONSOLE_MAX_BYTES = 64 * 1024;
/** The cookie a browser session rides on (login with cookie: true). */
export const SESSION_COOKIE = 'planetlite_session';
/** The header every state-changing call made with the session cookie must carry; the registry refuses it otherwise. */
export const CSRF_HEADER = 'x-requested-with';
export const CSRF_HEADER_VALUE = 'planetlite';
