// The only way out to the card processor. Outermost first: retry within the deadline → bulkhead →
// circuit breaker → one attempt with its own AbortSignal. The caller's fallback (pending + settle job)
// sits above this and receives `unavailable`; nothing here ever pretends a payment succeeded or failed.
import http from 'node:http';
import https from 'node:https';
import CircuitBreaker from 'opossum';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';
import { currentRequestId } from '../request-context.ts';

/** What the processor said about a payment, or that it could not be asked. */
export type ProcessorOutcome =
  | { kind: 'approved'; reference: string }
  | { kind: 'declined'; reference: string | null; code: string; message: string }
  /** The processor holds no payment for our key and has burned the key: none can ever be made with it. */
  | { kind: 'voided' }
  | { kind: 'unavailable'; reason: UnavailableReason; detail: string };

/** A lookup may also learn that the processor never saw the key. */
export type LookupOutcome = ProcessorOutcome | { kind: 'unknown' };

/**
 * A request may also be refused without being acted on (a 400): nothing was made this time, but nothing
 * was stored or burned either, so it proves nothing about an earlier request with the same key.
 */
export type SendOutcome = ProcessorOutcome | { kind: 'rejected'; code: string; message: string };

export type PaymentKind = 'charge' | 'refund';

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

/** The processor answered about a key: what it holds for it, or that it never saw it. */
class ProcessorAnswered extends Error {
  readonly outcome: Answer;
  constructor(outcome: Answer) {
    super(`processor answered ${outcome.kind}`);
    this.outcome = outcome;
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

interface Call {
  method: 'GET' | 'POST';
  path: string;
  body?: unknown;
  /** Sent as Idempotency-Key on a payment request. */
  key?: string;
}

type Attempt = (call: Call, timeoutMs: number) => Promise<Answer>;

type Answer = LookupOutcome | SendOutcome;

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
  | 'PROCESSOR_BREAKER_ENABLED'
>;

export interface ProcessorClient {
  /** Asks the processor to make the payment; its idempotency key makes every repeat the same request. */
  send(kind: PaymentKind, request: ChargeRequest | RefundRequest, idempotencyKey: string, deadline: number): Promise<SendOutcome>;
  /** What the processor holds for our key, looked up in its records (not its idempotency cache). */
  lookUp(kind: PaymentKind, idempotencyKey: string, deadline: number): Promise<LookupOutcome>;
  /** Burns a key the processor holds nothing for; answers what it holds when it does. */
  voidKey(kind: PaymentKind, idempotencyKey: string, deadline: number): Promise<ProcessorOutcome>;
  breakerState(): BreakerState;
  /** Whether a call would reach the processor now: the circuit closed, or half-open with its probe not yet taken. */
  canCall(): boolean;
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
  const transport = new URL(settings.PROCESSOR_URL).protocol === 'https:' ? https : http;
  // Connections to the processor are kept and reused, at most one per call in flight (the bulkhead's
  // bound): a new connection for every call was a tenth of a charge's CPU. The agent drops an idle one
  // before the processor's keep-alive timeout says it would close it.
  const agent = new transport.Agent({ keepAlive: true, maxSockets: settings.PROCESSOR_MAX_CONCURRENCY });

  const attempt: Attempt = async (call, timeoutMs) => {
    const requestId = currentRequestId();
    const body = call.body === undefined ? undefined : JSON.stringify(call.body);
    const response = await request(transport, agent, new URL(call.path, settings.PROCESSOR_URL), {
      method: call.method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }),
        ...(call.key === undefined ? {} : { 'idempotency-key': call.key }),
        ...(requestId ? { 'x-request-id': requestId } : {}),
      },
      body,
      // Per call, so a timed-out attempt really stops (its socket destroyed) and no other call is touched.
      signal: AbortSignal.timeout(timeoutMs),
    });
    const outcome = response.status < 500 ? outcomeOf(response.status, response.payload) : undefined;
    if (!outcome) throw new ProcessorHttpError(response.status);
    // An answer about the payment, not about the processor's health: never counted as a failure.
    if (outcome.kind !== 'approved') throw new ProcessorAnswered(outcome);
    return outcome;
  };

  const breaker = new CircuitBreaker<Parameters<Attempt>, Answer>(attempt, {
    name: 'processor',
    // The attempt's own AbortSignal is the timeout; opossum's would not cancel the request.
    timeout: false,
    errorThresholdPercentage: settings.BREAKER_ERROR_THRESHOLD_PERCENT,
    volumeThreshold: settings.BREAKER_VOLUME_THRESHOLD,
    rollingCountTimeout: settings.BREAKER_ROLLING_WINDOW_MS,
    resetTimeout: settings.BREAKER_RESET_TIMEOUT_MS,
    // A decline, a void, a "never seen" are the processor working as it should.
    errorFilter: (err: unknown) => err instanceof ProcessorAnswered,
  });
  // Without the breaker (to measure what it costs) every attempt goes straight to the processor.
  const fire = settings.PROCESSOR_BREAKER_ENABLED ? breaker.fire.bind(breaker) : attempt;
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

  async function call(operation: string, request: Call, deadline: number): Promise<Answer> {
    const started = performance.now();
    const outcome = await callWithRetries(request, deadline);
    const label = outcome.kind === 'unavailable' ? `unavailable_${outcome.reason}` : outcome.kind;
    observe(operation, label, (performance.now() - started) / 1000);
    return outcome;
  }

  async function callWithRetries(request: Call, deadline: number): Promise<Answer> {
    let last: ProcessorOutcome = { kind: 'unavailable', reason: 'deadline', detail: 'no time left to call' };
    for (let n = 1; n <= settings.PROCESSOR_MAX_ATTEMPTS; n += 1) {
      const left = deadline - Date.now();
      if (left < MIN_ATTEMPT_MS) return last;
      if (!bulkhead.tryAcquire()) {
        return { kind: 'unavailable', reason: 'bulkhead_full', detail: 'too many processor calls in flight' };
      }
      try {
        return await fire(request, Math.min(settings.PROCESSOR_ATTEMPT_TIMEOUT_MS, left));
      } catch (err) {
        if (err instanceof ProcessorAnswered) return err.outcome;
        if ((err as { code?: string }).code === 'EOPENBREAKER') {
          return { kind: 'unavailable', reason: 'circuit_open', detail: 'processor circuit is open' };
        }
        const timedOut = (err as Error).name === 'TimeoutError' || (err as Error).name === 'AbortError';
        last = { kind: 'unavailable', reason: timedOut ? 'timeout' : 'error', detail: (err as Error).message };
        logger.info({ attempt: n, path: request.path, reason: last.reason, detail: last.detail }, 'processor attempt failed');
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

  const keyPath = (action: 'lookup' | 'void', kind: PaymentKind, key: string) =>
    `/${action}/${kind}s/${encodeURIComponent(key)}`;
  // An answer a call of this kind cannot give says the processor is not well, as any other would.
  const unexpected = (kind: string): ProcessorOutcome => ({
    kind: 'unavailable',
    reason: 'error',
    detail: `the processor answered ${kind}`,
  });

  return {
    send: async (kind, request, key, deadline) => {
      const answer = await call(kind, { method: 'POST', path: `/${kind}s`, body: request, key }, deadline);
      return answer.kind === 'unknown' ? unexpected(answer.kind) : answer;
    },
    lookUp: async (kind, key, deadline) => {
      const answer = await call(`${kind}_lookup`, { method: 'GET', path: keyPath('lookup', kind, key) }, deadline);
      return answer.kind === 'rejected' ? unexpected(answer.kind) : answer;
    },
    voidKey: async (kind, key, deadline) => {
      const answer = await call(`${kind}_void`, { method: 'POST', path: keyPath('void', kind, key) }, deadline);
      return answer.kind === 'unknown' || answer.kind === 'rejected' ? unexpected(answer.kind) : answer;
    },
    breakerState: () => state,
    canCall: () => !settings.PROCESSOR_BREAKER_ENABLED || breaker.closed || breaker.pendingClose,
    onBreakerStateChange: (listener) => listeners.push(listener),
    shutdown: () => {
      breaker.shutdown();
      agent.destroy();
    },
  };
}

/**
 * One HTTP exchange: the status and the body as JSON (undefined when it is not JSON). Rejects when the
 * connection fails or `signal` aborts, before or during the answer (an AbortError).
 */
function request(
  transport: typeof http | typeof https,
  agent: http.Agent,
  url: URL,
  options: { method: string; headers: Record<string, string>; body?: string; signal: AbortSignal },
): Promise<{ status: number; payload: ProcessorPayload | undefined }> {
  return new Promise((resolve, reject) => {
    const req = transport.request(url, { method: options.method, headers: options.headers, agent, signal: options.signal }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        let payload: ProcessorPayload | undefined;
        try {
          payload = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ProcessorPayload;
        } catch {
          payload = undefined;
        }
        resolve({ status: res.statusCode ?? 0, payload });
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

interface ProcessorPayload {
  id?: string;
  state?: string;
  code?: string;
  message?: string;
  error?: { code?: string; message?: string };
}

/**
 * What an answer under 500 says. A payment request: 200 approved, 402 declined, 409 with
 * idempotency_key_voided refused for good, 400 rejected this time (nothing stored, nothing burned).
 * A lookup or void: 200 with the key's state. Anything else says the processor is not well.
 */
function outcomeOf(status: number, payload: ProcessorPayload | undefined): Answer | undefined {
  if (!payload) return undefined;
  if (status === 200 && payload.state) {
    switch (payload.state) {
      case 'succeeded':
        return payload.id ? { kind: 'approved', reference: payload.id } : undefined;
      case 'declined':
        return {
          kind: 'declined',
          reference: payload.id ?? null,
          code: payload.code ?? 'processor_rejected',
          message: payload.message ?? 'The processor declined the payment.',
        };
      case 'voided':
        return { kind: 'voided' };
      case 'unknown':
        return { kind: 'unknown' };
      default:
        return undefined;
    }
  }
  if (status === 200 && payload.id) return { kind: 'approved', reference: payload.id };
  if (status === 409 && payload.error?.code === 'idempotency_key_voided') return { kind: 'voided' };
  if (status === 402) {
    return {
      kind: 'declined',
      reference: payload.id ?? null,
      code: payload.error?.code ?? 'card_declined',
      message: payload.error?.message ?? 'The processor declined the payment.',
    };
  }
  if (status === 400) {
    return {
      kind: 'rejected',
      code: payload.error?.code ?? 'processor_rejected',
      message: payload.error?.message ?? 'The processor rejected the request.',
    };
  }
  return undefined;
}
