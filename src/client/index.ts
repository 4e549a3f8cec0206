// The client SDK of payments-exactly-once: `import { createClient } from 'payments-exactly-once/client'`.
// A separate program: it needs Node's global fetch, AbortSignal and crypto.randomUUID, and nothing from src/.
import { PaymentsError } from './errors.ts';
import { createSender, isRetryable, MAX_RETRY_DELAY_MS, positive, sleep } from './request.ts';
import type {
  Charge,
  ClientOptions,
  CreateChargeParams,
  CreateRefundParams,
  CreateWebhookEndpointParams,
  Event,
  EventType,
  List,
  PaymentsClient,
  Refund,
  RequestOptions,
  WebhookEndpoint,
} from './types.ts';

export { PaymentsError } from './errors.ts';
export { signWebhook, verifyWebhook, WebhookVerificationError } from './webhooks.ts';
export type { VerifiedWebhook, VerifyOptions } from './webhooks.ts';
export type { PaymentsErrorInit } from './errors.ts';
export type {
  AttemptInfo,
  Charge,
  ClientOptions,
  CreateChargeParams,
  CreateRefundParams,
  CreateWebhookEndpointParams,
  Event,
  EventType,
  FieldError,
  List,
  PaymentsClient,
  Refund,
  RequestOptions,
  WebhookEndpoint,
} from './types.ts';

const WAIT_DEFAULTS = { timeoutMs: 60_000, intervalMs: 500 } as const;

function idPath(collection: 'charges' | 'refunds' | 'events' | 'webhook_endpoints', id: string): string {
  if (typeof id !== 'string' || id === '') throw new TypeError(`a ${collection.slice(0, -1)} id is required`);
  return `/v1/${collection}/${encodeURIComponent(id)}`;
}

/** One key per logical call: made here, once, so every retry of the call carries the same one. */
const keyFor = (options?: RequestOptions) => options?.idempotencyKey ?? globalThis.crypto.randomUUID();

export function createClient(options: ClientOptions): PaymentsClient {
  const sender = createSender(options);

  const get = async <T>(path: string) => (await sender.send<T>({ method: 'GET', path })).body;
  const post = async <T>(path: string, body: unknown, requestOptions?: RequestOptions) =>
    (await sender.send<T>({ method: 'POST', path, body, idempotencyKey: keyFor(requestOptions) })).body;

  const list = <T>(collection: string, params: Record<string, string | number | undefined>) => {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) if (value !== undefined) query.set(name, String(value));
    const qs = query.toString();
    return get<List<T>>(`/v1/${collection}${qs ? `?${qs}` : ''}`);
  };
  const listCharges = (params: { limit?: number; starting_after?: string } = {}) => list<Charge>('charges', params);

  async function waitFor<T extends Charge | Refund>(
    payment: T,
    waitOptions: { timeoutMs?: number; intervalMs?: number } = {},
  ): Promise<T> {
    if (payment.status !== 'pending') return payment;
    const timeoutMs = positive('timeoutMs', waitOptions.timeoutMs, WAIT_DEFAULTS.timeoutMs);
    const intervalMs = positive('intervalMs', waitOptions.intervalMs, WAIT_DEFAULTS.intervalMs, 1);
    const path = idPath(payment.object === 'refund' ? 'refunds' : 'charges', payment.id);
    const deadlineAt = Date.now() + timeoutMs;
    const maxIntervalMs = Math.max(intervalMs, MAX_RETRY_DELAY_MS);
    let attempts = 0;
    for (let poll = 0; ; poll++) {
      // Backoff: the interval grows by half each poll up to 5 s, with jitter so many waiters spread out.
      const step = Math.min(maxIntervalMs, intervalMs * 1.5 ** poll);
      await sleep(Math.min(step / 2 + Math.random() * (step / 2), deadlineAt - Date.now()));
      const remaining = deadlineAt - Date.now();
      if (remaining <= 0) {
        throw new PaymentsError({
          status: 0,
          code: 'timeout',
          message: `${payment.object} ${payment.id} was still pending after ${timeoutMs} ms`,
          attempts,
        });
      }
      try {
        const sent = await sender.send<T>({ method: 'GET', path, deadlineMs: remaining });
        attempts += sent.attempts;
        if (sent.body.status !== 'pending') return sent.body;
      } catch (err) {
        // A poll that failed for a passing reason (no answer, 429, 5xx) is just a poll: keep following until the deadline.
        if (!(err instanceof PaymentsError) || !isRetryable(err.status, err.code)) throw err;
        attempts += err.attempts;
      }
    }
  }

  return {
    charges: {
      create: (params: CreateChargeParams, requestOptions?: RequestOptions) =>
        post<Charge>('/v1/charges', params, requestOptions),
      retrieve: async (id: string) => get<Charge>(idPath('charges', id)),
      list: listCharges,
      async *listAll(params: { limit?: number } = {}) {
        let startingAfter: string | undefined;
        for (;;) {
          const page = await listCharges({ limit: params.limit, starting_after: startingAfter });
          yield* page.data;
          const last = page.data.at(-1);
          if (!page.has_more || !last) return;
          startingAfter = last.id;
        }
      },
    },
    refunds: {
      create: (params: CreateRefundParams, requestOptions?: RequestOptions) =>
        post<Refund>('/v1/refunds', params, requestOptions),
      retrieve: async (id: string) => get<Refund>(idPath('refunds', id)),
    },
    events: {
      retrieve: async (id: string) => get<Event>(idPath('events', id)),
      list: (params: { limit?: number; starting_after?: string; type?: EventType } = {}) => list<Event>('events', params),
    },
    webhookEndpoints: {
      create: (params: CreateWebhookEndpointParams, requestOptions?: RequestOptions) =>
        post<WebhookEndpoint & { secret: string }>('/v1/webhook_endpoints', params, requestOptions),
      retrieve: async (id: string) => get<WebhookEndpoint>(idPath('webhook_endpoints', id)),
      list: () => list<WebhookEndpoint>('webhook_endpoints', {}),
      async del(id: string) {
        const deleted = { id, object: 'webhook_endpoint' as const, deleted: true as const };
        try {
          return (await sender.send<typeof deleted>({ method: 'DELETE', path: idPath('webhook_endpoints', id) })).body;
        } catch (err) {
          // A retry of a delete whose first answer was lost finds nothing: that first attempt deleted it.
          if (err instanceof PaymentsError && err.status === 404 && err.attempts > 1) return deleted;
          throw err;
        }
      },
    },
    waitFor,
  };
}
