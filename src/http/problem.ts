// Writing RFC 9457 problem details: the one shape every error response has.
import type { Response } from 'express';
import type { ProblemError } from '../errors.ts';

export const PROBLEM_TYPE_BASE = 'https://payments.example/problems/';

export function problemBody(problem: ProblemError, requestId: string | undefined): Record<string, unknown> {
  return {
    type: `${PROBLEM_TYPE_BASE}${problem.code.replaceAll('_', '-')}`,
    title: problem.title,
    status: problem.status,
    detail: problem.message,
    code: problem.code,
    request_id: requestId,
    ...(problem.errors ? { errors: problem.errors } : {}),
    ...problem.extra,
  };
}

export function sendProblem(res: Response, problem: ProblemError): void {
  if (problem.retryAfterSeconds !== undefined) res.set('Retry-After', String(problem.retryAfterSeconds));
  if (problem.status === 401) res.set('WWW-Authenticate', 'Bearer realm="payments"');
  res
    .status(problem.status)
    .type('application/problem+json')
    .json(problemBody(problem, res.locals.requestId));
}
