// The only way out to the card processor. Outermost first: retry within the deadline → bulkhead →
// circuit breaker → one attempt with its own AbortSignal. The caller's fallback (pending + settle job)
// sits above this and receives `unavailable`; nothing here ever pretends a charge succeeded.
import CircuitBreaker from 'opossum';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';
import { currentRequestId } from '../request-context.ts';

export type ProcessorOutcome =
  | { kind: 'approved'; reference: string }
  | { kind: 'declined'; reference: string | null; code: string; message: string }
  | { kind: 'unavailable'; reason: UnavailableReason; detail: string };

export type UnavailableReason = 'timeout' | 'error' | 'circuit_open' | 'bulkhead_full' | 'deadline';

export type BreakerState = 'closed' | 'open' | 'half_open';

export interface ChargeRequest {
  amount: number;
  currency: string;
  source: string;
  description: string | null;
}

export interface RefundRequest {
  charge: string;
  amount: number;
}

/** The processor answered "no": a business answer, not a failure of the processor. */
class ProcessorDeclined extends Error {
  readonly reference: string | null;
  readonly code: string;
  constructor(reference: string | null, code: string, message: string) {
    super(message);
    this.reference = reference;
    this.code = code;
  }
}

/** The processor answered with a status that says it is not well (5xx, or anything unexpected). */
class ProcessorHttpError extends Error {
  readonly status: number;
  constructor(status: number) {
    super(`processor answered ${status}`);
    this.status = status;
  }
}

/** No queue: a call that finds every slot taken fails at once rather than waiting. */
class Bulkhead {
  private inUse = 0;
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  tryAcquire(): boolean {
    if (this.inUse >= this.max) return false;
    this.inUse += 1;
    return true;
  }
  release(): void {
    this.inUse -= 1;
  }
}

type Attempt = (path: string, body: unknown, key: string, timeoutMs: number) => Promise<{ id: string }>;

// Below this much time left an attempt would likely time out and count against a healthy processor;
// better to answer pending now.
const MIN_ATTEMPT_MS = 200;
const RETRY_DELAY_CAP_MS = 1000;

export type ProcessorSettings = Pick<
  Config,
  | 'PROCESSOR_URL'
  | 'PROCESSOR_ATTEMPT_TIMEOUT_MS'
  | 'PROCESSOR_MAX_ATTEMPTS'
  | 'PROCESSOR_RETRY_BASE_MS'
  | 'PROCESSOR_MAX_CONCURRENCY'
  | 'BREAKER_ERROR_THRESHOLD_PERCENT'
  | 'BREAKER_VOLUME_THRESHOLD'
  | 'BREAKER_ROLLING_WINDOW_MS'
  | 'BREAKER_RESET_TIMEOUT_MS'
>;

export interface ProcessorClient {
  charge(request: ChargeRequest, idempotencyKey: string, deadline: number): Promise<ProcessorOutcome>;
  refund(request: RefundRequest, idempotencyKey: string, deadline: number): Promise<ProcessorOutcome>;
  breakerState(): BreakerState;
  onBreakerStateChange(listener: (state: BreakerState) => void): void;
  shutdown(): void;
}

/** Told about every logical call (all its attempts): for metrics. */
export type CallObserver = (operation: string, outcome: string, seconds: number) => void;

export function createProcessorClient(
  settings: ProcessorSettings,
  logger: Logger,
  observe: CallObserver = () => undefined,
): ProcessorClient {
  const attempt: Attempt = async (path, body, key, timeoutMs) => {
    const requestId = currentRequestId();
    const response = await fetch(new URL(path, settings.PROCESSOR_URL), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'idempotency-key': key,
        ...(requestId ? { 'x-request-id': requestId } : {}),
      },
      body: JSON.stringify(body),
      // Per call, so a timed-out attempt really stops and no other call is touched.
      signal: AbortSignal.timeout(timeoutMs),
    });
    const payload = (await response.json().catch(() => undefined)) as
      | { id?: string; error?: { code?: string; message?: string } }
      | undefined;
    if (response.status === 200 && payload?.id) return { id: payload.id };
    if (response.status === 402 || response.status === 400) {
      throw new ProcessorDeclined(
        payload?.id ?? null,
        payload?.error?.code ?? 'processor_rejected',
        payload?.error?.message ?? 'The processor rejected the request.',
      );
    }
    throw new ProcessorHttpError(response.status);
  };

  const breaker = new CircuitBreaker<Parameters<Attempt>, { id: string }>(attempt, {
    name: 'processor',
    // The attempt's own AbortSignal is the timeout; opossum's would not cancel the request.
    timeout: false,
    errorThresholdPercentage: settings.BREAKER_ERROR_THRESHOLD_PERCENT,
    volumeThreshold: settings.BREAKER_VOLUME_THRESHOLD,
    rollingCountTimeout: settings.BREAKER_ROLLING_WINDOW_MS,
    resetTimeout: settings.BREAKER_RESET_TIMEOUT_MS,
    // A decline is the processor working as it should.
    errorFilter: (err: unknown) => err instanceof ProcessorDeclined,
  });
  const bulkhead = new Bulkhead(settings.PROCESSOR_MAX_CONCURRENCY);

  let state: BreakerState = 'closed';
  const listeners: ((s: BreakerState) => void)[] = [];
  const moveTo = (next: BreakerState) => {
    state = next;
    logger.warn({ breaker: 'processor', state: next }, `processor circuit ${next}`);
    for (const listener of listeners) listener(next);
  };
  breaker.on('open', () => moveTo('open'));
  breaker.on('halfOpen', () => moveTo('half_open'));
  breaker.on('close', () => moveTo('closed'));

  async function call(path: string, body: unknown, key: string, deadline: number): Promise<ProcessorOutcome> {
    const started = performance.now();
    const outcome = await callWithRetries(path, body, key, deadline);
    const label = outcome.kind === 'unavailable' ? `unavailable_${outcome.reason}` : outcome.kind;
    observe(path.slice(1), label, (performance.now() - started) / 1000);
    return outcome;
  }

  async function callWithRetries(path: string, body: unknown, key: string, deadline: number): Promise<ProcessorOutcome> {
    let last: ProcessorOutcome = { kind: 'unavailable', reason: 'deadline', detail: 'no time left to call' };
    for (let n = 1; n <= settings.PROCESSOR_MAX_ATTEMPTS; n += 1) {
      const left = deadline - Date.now();
      if (left < MIN_ATTEMPT_MS) return last;
      if (!bulkhead.tryAcquire()) {
        return { kind: 'unavailable', reason: 'bulkhead_full', detail: 'too many processor calls in flight' };
      }
      try {
        const { id } = await breaker.fire(path, body, key, Math.min(settings.PROCESSOR_ATTEMPT_TIMEOUT_MS, left));
        return { kind: 'approved', reference: id };
      } catch (err) {
        if (err instanceof ProcessorDeclined) {
          return { kind: 'declined', reference: err.reference, code: err.code, message: err.message };
        }
        if ((err as { code?: string }).code === 'EOPENBREAKER') {
          return { kind: 'unavailable', reason: 'circuit_open', detail: 'processor circuit is open' };
        }
        const timedOut = (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError';
        last = { kind: 'unavailable', reason: timedOut ? 'timeout' : 'error', detail: (err as Error).message };
        logger.info({ attempt: n, path, reason: last.reason, detail: last.detail }, 'processor attempt failed');
      } finally {
        bulkhead.release();
      }
      // Full jitter: a random wait up to the exponential step, so retrying clients spread out.
      const wait = Math.random() * Math.min(RETRY_DELAY_CAP_MS, settings.PROCESSOR_RETRY_BASE_MS * 2 ** (n - 1));
      if (n === settings.PROCESSOR_MAX_ATTEMPTS || Date.now() + wait + MIN_ATTEMPT_MS > deadline) return last;
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    return last;
  }

  return {
    charge: (request, key, deadline) => call('/charges', request, key, deadline),
    refund: (request, key, deadline) => call('/refunds', request, key, deadline),
    breakerState: () => state,
    onBreakerStateChange: (listener) => listeners.push(listener),
    shutdown: () => breaker.shutdown(),
  };
}
