// One error handler: every 4xx/5xx leaves as RFC 9457 problem+json with a stable code.
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { isAppError } from '@planetlite/core';
import { STATUS_CODES } from 'node:http';
import { RETRY_AFTER_SECONDS, serviceUnavailable } from './unavailable.js';

export function sendProblem(reply: FastifyReply, status: number, code: string, detail: string): FastifyReply {
  return reply
    .code(status)
    .type('application/problem+json')
    .send({ type: `urn:planetlite:problem:${code}`, title: STATUS_CODES[status] ?? 'Error', status, detail, code });
}

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
    // Database refusals that only a racing or odd request can cause are the client's, not ours.
    switch ((err as { code?: string }).code) {
      case '23505':
        return sendProblem(reply, 409, 'already_exists', 'an object with that name or key already exists (a concurrent request created it)');
      case '23503':
        return sendProblem(reply, 409, 'conflict', 'an object this request refers to was removed meanwhile; try again');
      case '22P05':
      case '22021':
        return sendProblem(reply, 400, 'invalid_request', 'text fields must not contain NUL (\\u0000) characters');
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
