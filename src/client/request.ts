// Sends one logical call as one or more HTTP attempts: the retry rules, backoff, Retry-After and the deadline.
import { PaymentsError, type PaymentsErrorInit } from './errors.ts';
import type { AttemptInfo, Charge, ClientOptions, FieldError, Refund } from './types.ts';

export const DEFAULTS = { timeoutMs: 10_000, maxAttempts: 5, deadlineMs: 60_000, retryBaseMs: 250 } as const;
/** The longest jittered backoff between two attempts. */
export const MAX_RETRY_DELAY_MS = 5_000;
/** An attempt is not started with less time than this left before the deadline. */
const MIN_ATTEMPT_MS = 100;
const USER_AGENT = 'payments-exactly-once-client/0.1.0';

export interface Call {
  method: 'GET' | 'POST' | 'DELETE';
  /** Path and query, e.g. /v1/charges?limit=2 */
  path: string;
  body?: unknown;
  /** POST only: carried unchanged by every attempt. */
  idempotencyKey?: string;
  /** Overrides the client's deadlineMs for this call. */
  deadlineMs?: number;
}

export interface Sent<T> {
  body: T;
  attempts: number;
}

/**
 * Whether an answer (or the lack of one) may be retried. POSTs are safe to resend only because every
 * attempt carries the same Idempotency-Key; GETs change nothing.
 */
export function isRetryable(status: number, code: string): boolean {
  // No answer (network error, per-attempt timeout): the request may or may not have run. Resending it with
  // the same key makes it happen exactly once, or hands back the stored answer of the attempt that ran.
  if (status === 0) return true;
  // The first attempt with this key is still in flight: wait, and the retry replays its answer.
  // Any other 409 (charge_not_refundable, refund_exceeds_charge) is a business rule: the same request gets the same answer.
  if (status === 409) return code === 'idempotency_key_in_use';
  // Rate limited: nothing was done; the same request later may pass.
  if (status === 429) return true;
  // Every 5xx: overloaded did nothing, database_unavailable and request_timeout may have done part of the work;
  // the API promises that a retry with the same key finishes it exactly once.
  if (status >= 500) return true;
  // 400, 401, 402, 404, 422 and the rest describe the request itself: repeating it cannot change the answer.
  return false;
}

/** Full jitter: random(0, min(max, base * 2^(retry-1))), retry counting from 1. */
export function backoffMs(retry: number, baseMs: number): number {
  return Math.random() * Math.min(MAX_RETRY_DELAY_MS, baseMs * 2 ** (retry - 1));
}

/** Retry-After in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));

type Attempt =
  | { ok: true; status: number; body: unknown; requestId?: string }
  | { ok: false; problem: Omit<PaymentsErrorInit, 'attempts'>; retryAfterMs?: number; error?: string };

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const str = (value: unknown): string | undefined => (typeof value === 'string' ? value : undefined);

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as { message?: string; code?: string } | undefined;
  const inner = cause?.message ?? cause?.code;
  return inner && inner !== err.message ? `${err.message}: ${inner}` : err.message;
}

function isTimeout(err: unknown): boolean {
  const name = (err as { name?: unknown })?.name;
  return name === 'TimeoutError' || name === 'AbortError';
}

export function positive(name: string, value: number | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new TypeError(`${name} must be a number >= ${min}`);
  }
  return value;
}

export function createSender(options: ClientOptions) {
  if (!options.baseUrl) throw new TypeError('baseUrl is required');
  if (!options.apiKey) throw new TypeError('apiKey is required');
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  const timeoutMs = positive('timeoutMs', options.timeoutMs, DEFAULTS.timeoutMs, 1);
  const maxAttempts = Math.floor(positive('maxAttempts', options.maxAttempts, DEFAULTS.maxAttempts, 1));
  const defaultDeadlineMs = positive('deadlineMs', options.deadlineMs, DEFAULTS.deadlineMs, 1);
  const retryBaseMs = positive('retryBaseMs', options.retryBaseMs, DEFAULTS.retryBaseMs);

  function report(info: AttemptInfo) {
    try {
      options.onAttempt?.(info);
    } catch {
      // A metrics hook must never change the outcome of a payment.
    }
  }

  async function attemptOnce(call: Call, budgetMs: number): Promise<Attempt> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${options.apiKey}`,
      Accept: 'application/json',
      'User-Agent': USER_AGENT,
    };
    if (call.method === 'POST') headers['Content-Type'] = 'application/json';
    if (call.idempotencyKey !== undefined) headers['Idempotency-Key'] = call.idempotencyKey;

    let response: Response;
    let text: string;
    try {
      // The signal also bounds reading the body: a stalled body is a timeout like a stalled header.
      response = await fetch(`${baseUrl}${call.path}`, {
        method: call.method,
        headers,
        body: call.body === undefined ? undefined : JSON.stringify(call.body),
        signal: AbortSignal.timeout(budgetMs),
        redirect: 'manual', // the API never redirects; a 3xx is reported, not followed with the body dropped
      });
      text = await response.text();
    } catch (err) {
      const timedOut = isTimeout(err);
      const error = timedOut ? `no answer within ${Math.round(budgetMs)} ms` : errorText(err);
      return {
        ok: false,
        error,
        problem: {
          status: 0,
          code: timedOut ? 'timeout' : 'network_error',
          message: `${call.method} ${call.path}: ${error}`,
          idempotencyKey: call.idempotencyKey,
          cause: err,
        },
      };
    }

    const contentType = response.headers.get('content-type') ?? '';
    let body: unknown = text;
    let parsed = false;
    if (/[/+]json\b/i.test(contentType)) {
      try {
        body = JSON.parse(text);
        parsed = true;
      } catch {
        // Kept as text; judged below.
      }
    }
    const headerRequestId = response.headers.get('x-request-id') ?? undefined;

    if (response.ok) {
      if (parsed) return { ok: true, status: response.status, body, requestId: headerRequestId };
      return {
        ok: false,
        problem: {
          status: response.status,
          code: 'invalid_response',
          message: `${call.method} ${call.path}: a ${response.status} answer whose body is not JSON`,
          requestId: headerRequestId,
          idempotencyKey: call.idempotencyKey,
          body,
        },
      };
    }

    const problem = isObject(body) ? body : {};
    const code = str(problem.code) ?? `http_${response.status}`;
    const payment = response.status === 402 ? (problem.charge ?? problem.refund) : undefined;
    return {
      ok: false,
      retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
      problem: {
        status: response.status,
        code,
        type: str(problem.type),
        title: str(problem.title),
        detail: str(problem.detail),
        message: str(problem.detail) ?? str(problem.title) ?? `${call.method} ${call.path} answered ${response.status}`,
        requestId: str(problem.request_id) ?? headerRequestId,
        errors: Array.isArray(problem.errors) ? (problem.errors as FieldError[]) : undefined,
        payment: isObject(payment) ? (payment as unknown as Charge | Refund) : undefined,
        idempotencyKey: call.idempotencyKey,
        body,
      },
    };
  }

  /** One logical call: attempts until an answer that is final, maxAttempts, or the deadline. */
  async function send<T>(call: Call): Promise<Sent<T>> {
    const deadlineAt = Date.now() + (call.deadlineMs ?? defaultDeadlineMs);
    const path = call.path.split('?')[0]!;
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      const budgetMs = Math.max(1, Math.min(timeoutMs, deadlineAt - Date.now()));
      const result = await attemptOnce(call, budgetMs);
      const ms = Math.round(performance.now() - started);
      const status = result.ok ? result.status : result.problem.status;
      report({
        method: call.method,
        path,
        attempt,
        status,
        code: result.ok ? undefined : result.problem.code,
        requestId: result.ok ? result.requestId : result.problem.requestId,
        idempotencyKey: call.idempotencyKey,
        ms,
        error: result.ok ? undefined : result.error,
      });
      if (result.ok) return { body: result.body as T, attempts: attempt };

      const fail = () => new PaymentsError({ ...result.problem, attempts: attempt });
      if (!isRetryable(result.problem.status, result.problem.code)) throw fail();
      if (attempt >= maxAttempts) throw fail();
      // Retry-After wins when it asks for longer than the jittered backoff: the server knows when it can take us.
      const wanted = Math.max(backoffMs(attempt, retryBaseMs), result.retryAfterMs ?? 0);
      // The deadline caps the wait; when not even a short attempt would fit after it, stop with this answer.
      const wait = Math.min(wanted, deadlineAt - Date.now() - Math.min(MIN_ATTEMPT_MS, timeoutMs));
      if (wait < 0) throw fail();
      await sleep(wait);
    }
  }

  return { send };
}

export type Sender = ReturnType<typeof createSender>;
