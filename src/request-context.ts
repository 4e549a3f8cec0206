// Per-operation context carried through every await: a request's, or a background job's. Any log line
// can name its operation, and every wait below (pool, statement, lock, processor) fits its deadline.
import { AsyncLocalStorage } from 'node:async_hooks';

export interface RequestContext {
  requestId: string;
  /** Milliseconds since the epoch after which the work must have ended. */
  deadline: number;
}

export const requestContext = new AsyncLocalStorage<RequestContext>();

export function currentRequestId(): string | undefined {
  return requestContext.getStore()?.requestId;
}

export function currentDeadline(): number | undefined {
  return requestContext.getStore()?.deadline;
}

/** Runs background work (a job, a completer pass) under its own id and deadline. */
export function withDeadline<T>(requestId: string, ms: number, work: () => Promise<T>): Promise<T> {
  return requestContext.run({ requestId, deadline: Date.now() + ms }, work);
}
