// One error handler: every 4xx/5xx leaves as RFC 9457 problem+json with a stable code, also the
// ones Fastify answers before a route (bad URLs, over-long parameters) and the ones Node's HTTP
// parser refuses before Fastify (bad request lines, headers too large).
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import type { Socket } from 'node:net';
import { isAppError, type ErrorCode } from '@planetlite/core';
import { STATUS_CODES } from 'node:http';
import { RETRY_AFTER_SECONDS, serviceUnavailable } from './unavailable.js';

export function problemOf(status: number, code: ErrorCode, detail: string) {
  return { type: `urn:planetlite:problem:${code}`, title: STATUS_CODES[status] ?? 'Error', status, detail, code };
}

export function sendProblem(reply: FastifyReply, status: number, code: ErrorCode, detail: string): FastifyReply {
  return reply.code(status).type('application/problem+json').send(problemOf(status, code, detail));
}

/**
 * PostgreSQL's refusals of values the schemas let through (SQLSTATE → status, code, detail).
 * The schemas match the columns, so these are last lines of defence and races, never a 500.
 */
const DATABASE_REFUSALS: Record<string, [number, ErrorCode, string]> = {
  '22P02': [400, 'invalid_request', 'a value is not in the form its field takes'],
  '22003': [400, 'invalid_request', 'a number is outside the range its field holds'],
  '22007': [400, 'invalid_request', 'a date or time is not in RFC 3339 form'],
  '22008': [400, 'invalid_request', 'a date or time is outside the range the registry holds (years 1 to 9999)'],
  '22001': [400, 'invalid_request', 'a text value is longer than its field holds'],
  '22021': [400, 'invalid_request', 'text fields must be valid UTF-8 without NUL (\\u0000) characters'],
  '22P05': [400, 'invalid_request', 'text fields must not contain NUL (\\u0000) characters or unpaired surrogates'],
  '2202E': [400, 'invalid_request', 'an array subscript is out of range'],
  '23514': [400, 'invalid_request', 'a value breaks a rule of its field'],
  '54001': [400, 'invalid_request', 'the request nests too deeply'],
  '23505': [409, 'already_exists', 'an object with that name or key already exists (a concurrent request created it)'],
  '23503': [409, 'conflict', 'an object this request refers to was removed meanwhile; try again'],
  '40001': [409, 'conflict', 'a concurrent change got in the way; try again'],
  '40P01': [409, 'conflict', 'a concurrent change got in the way; try again'],
};

/** The status, code and detail of a PostgreSQL error, or null when it is not one we can pin on the request. */
export function databaseRefusal(err: unknown): [number, ErrorCode, string] | null {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? (DATABASE_REFUSALS[code] ?? null) : null;
}

/** Node's HTTP parser refused the request before Fastify saw it: answer problem+json and hang up. */
function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  // An answer already went out on this connection (a body after a HEAD, say): only hang up.
  if ((socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent) return void socket.destroy();
  const [status, code, detail]: [number, ErrorCode, string] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'request_timeout', 'the request did not arrive in time']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'headers_too_large', 'the request line and headers are larger than the registry takes (16 KiB); shorten the URL or headers']
    : [400, 'malformed_request', 'the request is not well-formed HTTP/1.1'];
  const body = JSON.stringify(problemOf(status, code, detail));
  // The answer to a HEAD carries the headers of the body it would have, but not the body.
  const head = (err as { rawPacket?: Buffer }).rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${head ? '' : body}`);
  }
  socket.destroy();
}

/** Errors Fastify's router answers before any route or hook. */
function frameworkErrors(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  const path = req.url.split('?')[0] ?? '';
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') void sendProblem(reply, 414, 'uri_too_long', `a path parameter of ${path.slice(0, 80)}… is longer than any name or id the registry holds`);
  else if (err.code === 'FST_ERR_BAD_URL') void sendProblem(reply, 400, 'invalid_request', `the path is not valid percent-encoded UTF-8: ${path.slice(0, 200)}`);
  else void sendProblem(reply, 400, 'invalid_request', err.message);
}

/** The Fastify constructor options that send these errors here too. */
export const errorServerOptions = { clientErrorHandler, frameworkErrors } satisfies Partial<FastifyServerOptions>;

interface AjvError {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** Names the offending field: "body.name must match pattern …", "body has unknown field 'x'". */
export function validationDetail(context: string | undefined, errors: AjvError[]): string {
  const e = errors[0];
  if (!e) return `${context ?? 'request'} is invalid`;
  const where = `${context ?? 'request'}${(e.instancePath ?? '').replace(/\//g, '.')}`;
  if (e.keyword === 'additionalProperties') return `${where} has unknown field '${String(e.params?.additionalProperty)}'`;
  if (e.keyword === 'required') return `${where} must have field '${String(e.params?.missingProperty)}'`;
  if (e.keyword === 'enum') return `${where} must be one of ${(e.params?.allowedValues as unknown[]).join(', ')}`;
  return `${where} ${e.message ?? 'is invalid'}`;
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setNotFoundHandler((req, reply) => sendProblem(reply, 404, 'not_found', `no route ${req.method} ${req.url.split('?')[0]}`));

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (isAppError(err)) return sendProblem(reply, err.status, err.code, err.message);
    if (err.validation) return sendProblem(reply, 400, 'invalid_request', validationDetail(err.validationContext, err.validation as AjvError[]));
    switch (err.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE':
        return sendProblem(reply, 413, 'payload_too_large', `request body is larger than ${req.routeOptions.bodyLimit ?? 0} bytes`);
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return sendProblem(reply, 415, 'unsupported_media_type', `content type '${req.headers['content-type'] ?? ''}' is not supported; send application/json`);
      case 'FST_ERR_CTP_EMPTY_JSON_BODY':
        return sendProblem(reply, 400, 'malformed_json', 'the body is empty but content-type is application/json');
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
        return sendProblem(reply, 400, 'malformed_json', `the body is not valid JSON: ${err.message}`);
    }
    const refused = databaseRefusal(err);
    if (refused) {
      req.log.warn({ err, sqlstate: (err as { code?: string }).code }, 'database refused a value the schema let through');
      return sendProblem(reply, ...refused);
    }
    const outage = serviceUnavailable(err);
    if (outage) {
      req.log.warn({ err: err.message, code: outage.code }, 'service unavailable');
      return sendProblem(reply.header('retry-after', String(RETRY_AFTER_SECONDS)), 503, outage.code, outage.detail);
    }
    const status = err.statusCode ?? 500;
    if (status === 429) return sendProblem(reply, 429, 'rate_limited', err.message || 'too many requests; try again later');
    if (status === 400 && err instanceof SyntaxError) return sendProblem(reply, 400, 'malformed_json', `the body is not valid JSON: ${err.message}`);
    if (status >= 400 && status < 500) return sendProblem(reply, status, status === 404 ? 'not_found' : 'invalid_request', err.message);
    req.log.error({ err }, 'request failed');
    return sendProblem(reply, 500, 'internal_error', 'the registry hit an internal error; it has been logged');
  });
}
