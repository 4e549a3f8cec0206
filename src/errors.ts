// The service's named errors. http/error-handler.ts is the only place that turns them into a response.

export const PROBLEM_TYPE_BASE = 'https://payments.example/problems/';

export interface FieldError {
  path: string;
  message: string;
}

/** An error the client is told about: it carries its status, stable code and human title. */
export class ProblemError extends Error {
  readonly status: number;
  readonly code: string;
  readonly title: string;
  readonly errors: FieldError[] | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly extra: Record<string, unknown> | undefined;

  constructor(
    status: number,
    code: string,
    title: string,
    detail: string,
    options: { errors?: FieldError[]; retryAfterSeconds?: number; extra?: Record<string, unknown> } = {},
  ) {
    super(detail);
    this.status = status;
    this.code = code;
    this.title = title;
    this.errors = options.errors;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.extra = options.extra;
  }

  /** The RFC 9457 body. */
  toBody(requestId: string | undefined): Record<string, unknown> {
    return {
      type: `${PROBLEM_TYPE_BASE}${this.code.replaceAll('_', '-')}`,
      title: this.title,
      status: this.status,
      detail: this.message,
      code: this.code,
      request_id: requestId,
      ...(this.errors ? { errors: this.errors } : {}),
      ...this.extra,
    };
  }
}

/** Body, query or path failed validation; `errors` says where. */
export class ValidationError extends ProblemError {
  constructor(errors: FieldError[], detail = 'The request is not valid; see errors for each problem.') {
    super(400, 'validation_failed', 'Request validation failed', detail, { errors });
  }
}

/** No usable API key. */
export class UnauthenticatedError extends ProblemError {
  constructor(detail: string) {
    super(401, 'unauthenticated', 'Authentication required', detail);
  }
}

/** Unknown object, or one that belongs to another account. */
export class NotFoundError extends ProblemError {
  constructor(detail: string) {
    super(404, 'not_found', 'Not found', detail);
  }
}

/** A dependency of our own (the database) is down; nothing was written. */
export class DatabaseUnavailableError extends ProblemError {
  constructor() {
    super(
      503,
      'database_unavailable',
      'Database unavailable',
      'The service cannot reach its database right now. Retry later; retry a POST with the same Idempotency-Key.',
      { retryAfterSeconds: 2 },
    );
  }
}

/** The request's deadline passed before it could answer. */
export class RequestTimeoutError extends ProblemError {
  constructor() {
    super(
      503,
      'request_timeout',
      'Request timed out',
      'The request did not finish within its deadline. Its work may still complete: retry a POST with the same Idempotency-Key to get its answer.',
      { retryAfterSeconds: 1 },
    );
  }
}

/** Too many requests in flight; shed before any work. */
export class OverloadedError extends ProblemError {
  constructor() {
    super(
      503,
      'overloaded',
      'Service overloaded',
      'Too many requests in flight. Nothing was changed; retry later.',
      {
        retryAfterSeconds: 1,
      },
    );
  }
}

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '57014', // query_canceled: our statement_timeout
]);

/** True for errors that mean "the database is not answering", as opposed to a bug in our query. */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) return true;
  if (err instanceof AggregateError) return err.errors.some(isDatabaseUnavailable);
  return /Connection terminated|timeout exceeded when trying to connect|Query read timeout|connection timeout|Client has encountered a connection error/i.test(
    err.message,
  );
}
