// Writing RFC 9457 problem details: the one shape every error response has.
import type { Response } from 'express';
import type { ProblemError } from '../errors.ts';

export function sendProblem(res: Response, problem: ProblemError): void {
  if (problem.retryAfterSeconds !== undefined) res.set('Retry-After', String(problem.retryAfterSeconds));
  if (problem.status === 401) res.set('WWW-Authenticate', 'Bearer realm="payments"');
  res.status(problem.status).type('application/problem+json').json(problem.toBody(res.locals.requestId));
}
