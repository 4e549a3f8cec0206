// The only place that turns an error into an HTTP response. Unexpected errors never show their text.
import type { ErrorRequestHandler, RequestHandler } from 'express';
import {
  DatabaseUnavailableError,
  databaseTrouble,
  NotFoundError,
  ProblemError,
  RequestInterruptedError,
  RequestTimeoutError,
  UnauthenticatedError,
  ValidationError,
} from '../errors.ts';
import { UNKNOWN_KEY } from '../accounts/accounts.service.ts';
import type { Logger } from '../logger.ts';
import { sendProblem } from './problem.ts';

const BODY_PARSER_PROBLEMS: Record<string, () => ProblemError> = {
  'entity.parse.failed': () =>
    new ProblemError(400, 'malformed_json', 'Malformed JSON', 'The request body is not valid JSON.'),
  'entity.too.large': () =>
    new ProblemError(
      413,
      'payload_too_large',
      'Payload too large',
      'The request body is larger than 16 KiB.',
    ),
  'encoding.unsupported': () =>
    new ProblemError(
      415,
      'unsupported_media_type',
      'Unsupported media type',
      'The body encoding is not supported.',
    ),
  'charset.unsupported': () =>
    new ProblemError(415, 'unsupported_media_type', 'Unsupported media type', 'Send the body as UTF-8 JSON.'),
};

function toProblem(err: unknown): ProblemError | undefined {
  if (err instanceof ProblemError) return err;
  const type = (err as { type?: unknown })?.type;
  if (typeof type === 'string' && BODY_PARSER_PROBLEMS[type]) return BODY_PARSER_PROBLEMS[type]();
  // Reads write nothing; an idempotent request says how far it got.
  const writes = err instanceof RequestInterruptedError ? err.writes : 'none';
  const cause = err instanceof RequestInterruptedError ? err.cause : err;
  if (cause instanceof ProblemError) return cause;
  const trouble = databaseTrouble(cause);
  if (trouble === 'timeout') return new RequestTimeoutError();
  if (trouble === 'unavailable') return new DatabaseUnavailableError(writes);
  const status = (err as { status?: unknown })?.status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ValidationError([], 'The request could not be read.');
  }
  return undefined;
}

export function notFoundHandler(): RequestHandler {
  return (req) => {
    throw new NotFoundError(`No route for ${req.method} ${req.path}.`);
  };
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return async (err, _req, res, next) => {
    if (res.headersSent) {
      // Answered already, by the deadline: the late work's own error or answer has nowhere to go.
      if (res.locals.deadlinePassed) return logger.warn({ cause: briefly(err) }, 'work finished after the request deadline');
      return next(err);
    }
    let problem = toProblem(err);
    // A key taken on trust is confirmed before any refusal goes out: a revoked one is told only that.
    const trusted = res.locals.trustedKey;
    if (trusted && (!problem || problem.status < 500)) {
      try {
        if (!(await trusted.confirm())) problem = new UnauthenticatedError(UNKNOWN_KEY);
      } catch (confirming) {
        problem = toProblem(confirming) ?? new DatabaseUnavailableError();
      }
      if (res.headersSent) return; // the deadline answered meanwhile
    }
    if (problem) {
      if (problem.status >= 500) logger.warn({ code: problem.code, cause: briefly(err) }, problem.message);
      return sendProblem(res, problem);
    }
    logger.error({ err }, 'unhandled error');
    sendProblem(
      res,
      new ProblemError(
        500,
        'internal_error',
        'Internal server error',
        'Something went wrong on our side; the log line with this request_id has the detail. Retry a POST with the same Idempotency-Key: it happens at most once.',
      ),
    );
  };
}

/** The error and its causes in one short line each: no client objects, no stacks of driver internals. */
function briefly(err: unknown): string {
  const parts: string[] = [];
  for (let e = err as { message?: string; code?: string; cause?: unknown } | undefined; e && parts.length < 4; e = e.cause as typeof e) {
    parts.push(e.code ? `${e.message} (${e.code})` : String(e.message));
  }
  return parts.join(' <- ');
}
