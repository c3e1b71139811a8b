// Errors with a stable machine code; the registry maps them to problem+json, the CLI to one line.

/** Stable codes seen by API clients; add new ones here so they stay discoverable. */
export type ErrorCode =
  | 'invalid_request'
  | 'malformed_json'
  | 'unsupported_media_type'
  | 'payload_too_large'
  | 'unauthorized'
  | 'invalid_credentials'
  | 'forbidden'
  | 'cross_site_refused'
  | 'not_found'
  | 'conflict'
  | 'already_exists'
  | 'slice_quota_exceeded'
  | 'sliver_quota_exceeded'
  | 'port_window_exhausted'
  | 'node_incapable'
  | 'image_incompatible'
  | 'slice_deleting'
  | 'sliver_deleting'
  | 'renewal_refused'
  | 'token_invalid'
  | 'node_key_revoked'
  | 'node_draining'
  | 'node_decommissioned'
  | 'rate_limited'
  | 'internal_error'
  // Answered by the HTTP layer, never thrown as an AppError: an upload whose bytes do not match
  // its digest, a path too long, a byte range beyond the file, requests Node's HTTP parser
  // refuses, the database or Redis out of reach, and a node's report not written because the
  // node hung up before its turn came (nobody reads that answer).
  | 'checksum_mismatch'
  | 'uri_too_long'
  | 'range_not_satisfiable'
  | 'request_timeout'
  | 'headers_too_large'
  | 'malformed_request'
  | 'database_unavailable'
  | 'redis_unavailable'
  | 'replica_overloaded'
  | 'report_dropped';

const STATUS: Record<ErrorCode, number> = {
  invalid_request: 400,
  malformed_json: 400,
  unsupported_media_type: 415,
  payload_too_large: 413,
  unauthorized: 401,
  invalid_credentials: 401,
  token_invalid: 401,
  node_key_revoked: 401,
  node_draining: 409,
  node_decommissioned: 409,
  forbidden: 403,
  cross_site_refused: 403,
  not_found: 404,
  conflict: 409,
  already_exists: 409,
  slice_quota_exceeded: 409,
  sliver_quota_exceeded: 409,
  port_window_exhausted: 409,
  image_incompatible: 409,
  node_incapable: 409,
  slice_deleting: 409,
  sliver_deleting: 409,
  renewal_refused: 400,
  rate_limited: 429,
  internal_error: 500,
  checksum_mismatch: 400,
  uri_too_long: 414,
  range_not_satisfiable: 416,
  request_timeout: 408,
  headers_too_large: 431,
  malformed_request: 400,
  database_unavailable: 503,
  redis_unavailable: 503,
  replica_overloaded: 503,
  report_dropped: 503,
};

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, detail: string) {
    super(detail);
    this.name = 'AppError';
    this.code = code;
    this.status = STATUS[code];
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}
