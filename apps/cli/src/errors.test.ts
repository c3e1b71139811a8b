import { describe, expect, it } from 'vitest';
import { ApiError } from '@planetlite/api';
import { CliError, RegistryUnreachableError, formatError, networkReason } from './errors.js';

const problem = (status: number, code: string, detail: string) => ({ type: `https://planetlite.dev/problems/${code}`, title: 'Conflict', status, detail, code });

describe('formatError', () => {
  it('gives the problem detail and its code', () => {
    const err = new ApiError(problem(409, 'slice_quota_exceeded', 'site princeton may have at most 2 slices'));
    expect(formatError(err)).toBe('site princeton may have at most 2 slices (slice_quota_exceeded)');
  });

  it('falls back to the title when there is no detail, and hints at login on 401', () => {
    expect(formatError(new ApiError({ ...problem(409, 'x', ''), title: 'Conflict' }))).toBe('Conflict (x)');
    expect(formatError(new ApiError(problem(401, 'unauthorized', 'token expired')))).toBe('token expired (unauthorized): run planetlite login again');
    expect(formatError(new ApiError(problem(401, 'invalid_credentials', 'email or password is wrong')))).toBe('email or password is wrong (invalid_credentials)');
  });

  it('is always one line', () => {
    expect(formatError(new Error('a\n  b\r\nc'))).toBe('a b c');
    expect(formatError(new ApiError(problem(400, 'invalid_request', 'body.name\nmust match')))).toBe('body.name must match (invalid_request)');
  });

  it('names the registry when it cannot be reached', () => {
    const msg = formatError(new RegistryUnreachableError('http://127.0.0.1:9', 'ECONNREFUSED'));
    expect(msg).toBe('cannot reach the registry at http://127.0.0.1:9 (ECONNREFUSED): is the registry running? set --registry or PLANETLITE_REGISTRY');
  });

  it('handles CLI errors, JSON trouble and thrown non-errors', () => {
    expect(formatError(new CliError('no such thing'))).toBe('no such thing');
    expect(formatError(new SyntaxError('Unexpected token <'))).toContain('is --registry the right URL?');
    expect(formatError('plain')).toBe('plain');
    expect(formatError(undefined)).toBe('undefined');
  });
});

describe('networkReason', () => {
  it('prefers the socket error code of the cause', () => {
    expect(networkReason(new TypeError('fetch failed', { cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }) }))).toBe('ECONNREFUSED');
    expect(networkReason(new TypeError('fetch failed', { cause: new AggregateError([Object.assign(new Error('x'), { code: 'EHOSTUNREACH' })]) }))).toBe('EHOSTUNREACH');
    expect(networkReason(new TypeError('fetch failed', { cause: new Error('bad port') }))).toBe('bad port');
    expect(networkReason(Object.assign(new Error('t'), { name: 'TimeoutError' }))).toBe('no answer in time');
  });
});
