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

/** What a request that failed part-way had written when it failed: nothing, or something we cannot know. */
export type Writes = 'none' | 'unknown';

/**
 * Our database is down. Whether the client may use a new key depends on how far the request got: only a
 * request that never claimed its key wrote nothing.
 */
export class DatabaseUnavailableError extends ProblemError {
  constructor(writes: Writes = 'none') {
    super(
      503,
      'database_unavailable',
      'Database unavailable',
      writes === 'none'
        ? 'The service cannot reach its database right now. Nothing was written: retry later.'
        : 'The service lost its database while this request was in progress: its outcome is unknown. Retry with the same Idempotency-Key; it will then happen exactly once.',
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
      'The request did not finish within its deadline: its outcome is unknown. Retry a POST with the same Idempotency-Key to get its answer.',
      { retryAfterSeconds: 1 },
    );
  }
}

export class RateLimitedError extends ProblemError {
  constructor(limit: { requests: number; windowSeconds: number }, retryAfterSeconds: number) {
    super(
      429,
      'rate_limited',
      'Too many requests',
      `This API key may send ${limit.requests} requests every ${limit.windowSeconds} s. Retry after ${retryAfterSeconds} s; nothing was done.`,
      { retryAfterSeconds },
    );
  }
}

/** Raised below the HTTP layer when the work's deadline leaves no time to wait any longer. */
export class DeadlineExceededError extends Error {
  override readonly name: string = 'DeadlineExceededError';
}

/** A statement was sent and the deadline came before its answer: the client stopped listening. */
export class StatementUnansweredError extends DeadlineExceededError {
  override readonly name = 'StatementUnansweredError';
}

/** A transaction's COMMIT was sent and no answer came back: it may or may not have committed. */
export class CommitUnknownError extends Error {
  constructor(cause: unknown) {
    super(`commit outcome unknown: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}

/** An idempotent request stopped by an error; says whether it had claimed its key (and so may have written). */
export class RequestInterruptedError extends Error {
  readonly writes: Writes;
  constructor(cause: unknown, writes: Writes) {
    super(`request interrupted (${writes === 'none' ? 'nothing written' : 'outcome unknown'})`, { cause });
    this.writes = writes;
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

// The server cannot do our work now, or this connection is no longer to a server that can: a restart, a
// failover (an old primary come back as a standby, a proxy still pointing at it), a lost host. The
// connection is destroyed and the work answers 503; the same request works again once a primary answers.
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  '25006', // read_only_sql_transaction: a standby, or a primary still in crash recovery behind a proxy
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up, shutting down, in recovery
  '57P04', // database_dropped
  '53300', // too_many_connections
]);

/**
 * Deadlock and serialization failures: the server rolled the statement or transaction back and said so,
 * so running it again is safe, and is how they are meant to be handled.
 */
const RETRYABLE_CODES = new Set([
  '40P01', // deadlock_detected
  '40001', // serialization_failure
]);

/**
 * A prepared statement the server refused to run because a table it reads changed shape since it was
 * prepared: nothing of it ran, and it is prepared again on its next run.
 */
export class StatementReplannedError extends Error {}

export const isRetryableConflict = (err: unknown): boolean =>
  err instanceof StatementReplannedError ||
  (typeof (err as { code?: unknown })?.code === 'string' && RETRYABLE_CODES.has((err as { code: string }).code));

const TIMEOUT_CODES = new Set([
  '57014', // query_canceled: a statement_timeout we set from the deadline
  '55P03', // lock_not_available: a lock_timeout we set from the deadline
]);

/**
 * Why a database call failed, when the database (not our query) is the reason: it is not answering
 * (`unavailable`), or the work's own deadline ran out while it waited on a statement or a lock (`timeout`).
 */
export function databaseTrouble(err: unknown): 'unavailable' | 'timeout' | undefined {
  // pg-boss emits some of its errors as plain copies ({ ...err, message, stack }), not Error instances.
  if (typeof err !== 'object' || err === null || typeof (err as { message?: unknown }).message !== 'string') return undefined;
  if (err instanceof DeadlineExceededError) return 'timeout';
  if (err instanceof CommitUnknownError) return databaseTrouble(err.cause) ?? 'unavailable';
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && TIMEOUT_CODES.has(code)) return 'timeout';
  if (typeof code === 'string' && (CONNECTION_CODES.has(code) || code.startsWith('08'))) return 'unavailable';
  if (err instanceof AggregateError) {
    const inner = err.errors.map(databaseTrouble);
    return inner.includes('unavailable') ? 'unavailable' : inner.find(Boolean);
  }
  return /Connection terminated|timeout exceeded when trying to connect|Query read timeout|connection timeout|Client has encountered a connection error|Connection ended|not queryable/i.test(
    (err as { message: string }).message,
  )
    ? 'unavailable'
    : undefined;
}
