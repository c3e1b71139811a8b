// The edge every request body, query and path crosses before a route: JSON nested no deeper than
// the registry stores and serialises, and text PostgreSQL can hold (no NUL, no unpaired UTF-16
// surrogate). Users get a 400 naming the field; node agents get their text mended instead, so a
// report with one cut-off error message is not refused whole.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '@planetlite/core';

/** Deeper than any document of the API (event data included) and far below what breaks JSON.stringify or jsonb. */
export const MAX_JSON_DEPTH = 32;

/** How deep arrays and objects nest in a JSON text, counted without parsing it (so without recursion). */
export function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) max = Math.max(max, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}

// A NUL, or a high surrogate not followed by a low one, or a low one not preceded by a high one.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const UNSTORABLE_ALL = new RegExp(UNSTORABLE.source, 'g');

/** Text as PostgreSQL can store it: NULs dropped, unpaired surrogates replaced by U+FFFD. */
export function storableText(s: string): string {
  return UNSTORABLE.test(s) ? s.replace(UNSTORABLE_ALL, (m) => (m === '\u0000' ? '' : '\ufffd')) : s;
}

/** Arrays and plain objects as JSON.parse and the query parser make them; a body stream (an image upload) is not one. */
function isJsonContainer(v: unknown): v is Record<string, unknown> | unknown[] {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v);
  return Array.isArray(v) || proto === Object.prototype || proto === null;
}

/** Where in a value the first unstorable text is (a field or a key), or null. */
export function unstorableAt(v: unknown, where: string, depth = 0): string | null {
  if (typeof v === 'string') return UNSTORABLE.test(v) ? where : null;
  if (!isJsonContainer(v) || depth > MAX_JSON_DEPTH) return null;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const at = unstorableAt(v[i], `${where}[${i}]`, depth + 1);
      if (at) return at;
    }
    return null;
  }
  for (const [k, x] of Object.entries(v)) {
    if (UNSTORABLE.test(k)) return `${where} key '${storableText(k)}'`;
    const at = unstorableAt(x, `${where}.${k}`, depth + 1);
    if (at) return at;
  }
  return null;
}

/** The same value with every string and key made storable. */
export function storableValue<T>(v: T, depth = 0): T {
  if (typeof v === 'string') return storableText(v) as T;
  if (!isJsonContainer(v) || depth > MAX_JSON_DEPTH) return v;
  if (Array.isArray(v)) return v.map((x) => storableValue(x, depth + 1)) as T;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [storableText(k), storableValue(x, depth + 1)])) as T;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Mend unstorable text in the body instead of refusing it (node agents' reports and events). */
    mendText?: boolean;
  }
}

export function registerInputChecks(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body as string;
    if (jsonDepth(text) > MAX_JSON_DEPTH) return done(new AppError('invalid_request', `the body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`), undefined);
    return parseJson(req, text, done);
  });

  app.addHook('preValidation', async (req: FastifyRequest) => {
    for (const [part, value] of [['params', req.params], ['querystring', req.query]] as const) {
      // The query parser's objects have a prototype of their own: walk their entries, not them.
      const at = unstorableAt(Object.fromEntries(Object.entries(value ?? {})), part);
      if (at) throw new AppError('invalid_request', `${at} must not contain NUL (\\u0000) or unpaired surrogate characters`);
    }
    if (req.routeOptions.config.mendText) {
      req.body = storableValue(req.body);
      return;
    }
    const at = unstorableAt(req.body, 'body');
    if (at) throw new AppError('invalid_request', `${at} must not contain NUL (\\u0000) or unpaired surrogate characters`);
  });
}
