// The public shapes of the API, copied from its contract (openapi.yaml): the SDK is a separate program and
// imports nothing from the service.

export interface ClientOptions {
  /** Where the API listens, e.g. http://127.0.0.1:3000 (a path prefix is kept). */
  baseUrl: string;
  /** An sk_test_… key; sent as `Authorization: Bearer …`. */
  apiKey: string;
  /** Timeout of one HTTP attempt; default 10 000 ms. */
  timeoutMs?: number;
  /** Attempts of one logical call, the first included; default 5. */
  maxAttempts?: number;
  /** Budget of one logical call, its attempts and the waits between them included; default 60 000 ms. */
  deadlineMs?: number;
  /** Backoff before retry n is random(0, min(5000, retryBaseMs * 2^(n-1))) (full jitter); default 250 ms. */
  retryBaseMs?: number;
  /** Told about every HTTP attempt (metrics, tests). An exception it throws is ignored. */
  onAttempt?: (attempt: AttemptInfo) => void;
}

export interface AttemptInfo {
  method: string;
  /** The request path without its query string, e.g. /v1/charges or /v1/charges/ch_123. */
  path: string;
  /** 1 for the first attempt of a logical call. */
  attempt: number;
  /** The HTTP status, or 0 when no answer came (network error or timeout). */
  status: number;
  /** The problem's code of an error answer, or network_error / timeout when status is 0. */
  code?: string;
  requestId?: string;
  /** The Idempotency-Key this attempt carried (POSTs only). */
  idempotencyKey?: string;
  /** How long the attempt took. */
  ms: number;
  /** The network or timeout error's text when status is 0. */
  error?: string;
}

export interface Charge {
  id: string;
  object: 'charge';
  amount: number;
  currency: string;
  status: 'pending' | 'succeeded' | 'failed';
  amount_refunded: number;
  refunded: boolean;
  description: string | null;
  metadata: Record<string, string>;
  failure_code: string | null;
  failure_message: string | null;
  processor_reference: string | null;
  created: string;
}

export interface Refund {
  id: string;
  object: 'refund';
  amount: number;
  currency: string;
  charge: string;
  reason: string | null;
  status: 'pending' | 'succeeded' | 'failed';
  failure_code: string | null;
  failure_message: string | null;
  processor_reference: string | null;
  created: string;
}

export type EventType =
  | 'charge.pending'
  | 'charge.succeeded'
  | 'charge.failed'
  | 'charge.refunded'
  | 'charge.updated'
  | 'refund.pending'
  | 'refund.succeeded'
  | 'refund.failed'
  | 'webhook_endpoint.disabled';

/** A state change, as GET /v1/events shows it and a webhook delivers it. */
export interface Event<T = Charge | Refund | WebhookEndpoint> {
  id: string;
  object: 'event';
  type: EventType;
  created: string;
  data: { object: T };
}

export interface WebhookEndpoint {
  id: string;
  object: 'webhook_endpoint';
  url: string;
  enabled_events: (EventType | '*')[];
  status: 'enabled' | 'disabled';
  disabled_reason: string | null;
  created: string;
}

export interface CreateWebhookEndpointParams {
  url: string;
  /** The event types to send, or ['*'] for all of them. */
  enabled_events: (EventType | '*')[];
}

export interface List<T> {
  object: 'list';
  data: T[];
  has_more: boolean;
}

export interface CreateChargeParams {
  /** In the currency's minor unit: 1000 usd is $10.00. */
  amount: number;
  currency: string;
  /** A test card token, e.g. tok_visa or tok_chargeDeclined. */
  source: string;
  description?: string;
  metadata?: Record<string, string>;
}

export interface CreateRefundParams {
  charge: string;
  /** Defaults to what is left to refund. */
  amount?: number;
  reason?: 'duplicate' | 'fraudulent' | 'requested_by_customer';
}

export interface RequestOptions {
  /** Default: one crypto.randomUUID() per logical call, reused on every retry of it. */
  idempotencyKey?: string;
}

/** One entry of a validation problem's `errors`. */
export interface FieldError {
  path: string;
  message: string;
}

export interface PaymentsClient {
  charges: {
    /** 201 and 202 resolve (status says succeeded or pending); a 402 rejects with PaymentsError whose .payment is the failed charge. */
    create(params: CreateChargeParams, options?: RequestOptions): Promise<Charge>;
    retrieve(id: string): Promise<Charge>;
    list(params?: { limit?: number; starting_after?: string }): Promise<List<Charge>>;
    /** Every charge, newest first, following starting_after page by page. */
    listAll(params?: { limit?: number }): AsyncIterable<Charge>;
  };
  refunds: {
    create(params: CreateRefundParams, options?: RequestOptions): Promise<Refund>;
    retrieve(id: string): Promise<Refund>;
  };
  events: {
    retrieve(id: string): Promise<Event>;
    list(params?: { limit?: number; starting_after?: string; type?: EventType }): Promise<List<Event>>;
  };
  webhookEndpoints: {
    /** Resolves with the endpoint and its signing secret, which no other call shows. */
    create(params: CreateWebhookEndpointParams, options?: RequestOptions): Promise<WebhookEndpoint & { secret: string }>;
    retrieve(id: string): Promise<WebhookEndpoint>;
    list(): Promise<List<WebhookEndpoint>>;
    del(id: string): Promise<{ id: string; object: 'webhook_endpoint'; deleted: true }>;
  };
  /**
   * Follows a pending charge or refund (GET, polling with backoff) until it is succeeded or failed, or the
   * deadline (default 60 s) passes: then rejects PaymentsError code 'timeout'. Resolves at once if already final.
   */
  waitFor<T extends Charge | Refund>(payment: T, options?: { timeoutMs?: number; intervalMs?: number }): Promise<T>;
}
