// Webhook endpoints (made idempotently, like every POST) and the delivery of events to them: one job per
// (event, endpoint), one attempt per job, signed per the Standard Webhooks specification, retried with
// exponential backoff and full jitter until its window ends, then dead-lettered; an endpoint that took
// nothing for a whole window is disabled, and an event says so.
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Config } from '../config.ts';
import { type Db, inTransaction } from '../db/database.ts';
import { NotFoundError, ProblemError } from '../errors.ts';
import type { Events } from '../events/events.service.ts';
import { newId } from '../ids.ts';
import { type KeyRow, nothingToChange } from '../idempotency/idempotency.repository.ts';
import type {
  ClaimSpec,
  Idempotency,
  IdempotentRequest,
  IdempotentResult,
  Resumable,
  StoredResponse,
} from '../idempotency/idempotency.service.ts';
import type { Logger } from '../logger.ts';
import { currentRequestId } from '../request-context.ts';
import { objectId, parseWith } from '../validation.ts';
import { newSigningSecret, type SecretBox } from './secrets.ts';
import { signDelivery } from './signature.ts';
import { publicOnlyLookup, refusedLiteral } from './url-safety.ts';
import {
  type AttemptResult,
  countEndpointsLocked,
  deleteEndpoint,
  type DeliveryRow,
  type DeliveryTarget,
  disableFailingEndpoint,
  endpointIntent,
  type EndpointRow,
  failDelivery,
  findDeliveryTarget,
  findEndpoint,
  findEndpointByKey,
  listDeliveries,
  listEndpoints,
  recordAttempt,
  redriveDriverlessDeliveries,
} from './webhooks.repository.ts';
import { type CreateWebhookEndpointParams, createWebhookEndpointSchema, type WebhookEndpoint } from './webhooks.schemas.ts';

export function presentEndpoint(row: EndpointRow): WebhookEndpoint {
  return {
    id: row.id,
    object: 'webhook_endpoint',
    url: row.url,
    enabled_events: row.enabled_events,
    status: row.status,
    disabled_reason: row.disabled_reason,
    created: new Date(row.created_at).toISOString(),
  };
}

const iso = (date: Date | string | null) => (date === null ? null : new Date(date).toISOString());

/**
 * A delivery's id as the API and the logs give it, prefixed like every other object's (`whd_` and the
 * 32 hex digits of the row's UUID, which stays the key in the database and in its job).
 */
export const deliveryId = (uuid: string) => `whd_${uuid.replaceAll('-', '')}`;

function presentDelivery(row: Awaited<ReturnType<typeof listDeliveries>>[number]) {
  return {
    id: deliveryId(row.id),
    object: 'webhook_delivery' as const,
    event: row.event_id,
    endpoint: row.endpoint_id,
    status: row.status,
    attempt_count: row.attempts,
    next_attempt: row.status === 'pending' ? iso(row.next_attempt_at) : null,
    delivered: iso(row.delivered_at),
    last_error: row.last_error,
    attempts: row.attempt_log.map((a) => ({
      attempt: a.attempt,
      started: iso(a.started_at)!,
      duration_ms: a.duration_ms,
      response_status: a.response_status,
      error: a.error,
    })),
  };
}

/** Endpoints per account: each event is sent to every one that wants it. */
export const MAX_ENDPOINTS = 16;

/**
 * POST /v1/webhook_endpoints, in order: parse, claim the key with the endpoint (its secret sealed), answer.
 * There is no foreign call, and always the careful way: the account's row is locked while its endpoints
 * are counted, so concurrent requests cannot pass the limit together. The answer is stored with the key
 * like every answer, the secret in it sealed too, and opened each time it is sent (`reveal`): a client
 * whose answer was lost gets the secret by retrying, and the database never holds it in the clear.
 */
export function createWebhookEndpointStory(deps: { db: Db; box: SecretBox; idempotency: Idempotency }) {
  const { db, box, idempotency } = deps;
  const claimWith: ClaimSpec<CreateWebhookEndpointParams> = {
    method: 'POST',
    path: '/v1/webhook_endpoints',
    async refusal(trx, key) {
      if ((await countEndpointsLocked(trx, key.account_id)) < MAX_ENDPOINTS) return undefined;
      return new ProblemError(409, 'too_many_webhook_endpoints', 'Too many webhook endpoints', `An account has at most ${MAX_ENDPOINTS} webhook endpoints; delete one first.`);
    },
  };
  const answer = (row: EndpointRow | undefined): StoredResponse => {
    if (!row) {
      const gone = new NotFoundError('The webhook endpoint this request made was deleted before its answer could be given.');
      return { status: 404, body: gone.toBody(currentRequestId()), headers: { 'Content-Type': 'application/problem+json' } };
    }
    return {
      status: 201,
      body: { ...presentEndpoint(row), secret_sealed: row.secret_ciphertext },
      headers: { 'Content-Type': 'application/json', Location: `/v1/webhook_endpoints/${row.id}` },
    };
  };
  const reveal = (stored: StoredResponse): StoredResponse => {
    const { secret_sealed: sealed, ...endpoint } = stored.body;
    // A new object, not a spread of the stored one: its stored text is the sealed secret's.
    return typeof sealed === 'string' ? { status: stored.status, headers: stored.headers, body: { ...endpoint, secret: box.open(sealed) } } : stored;
  };

  /** From `intent_recorded`: the answer, stored with the key. A resumed request reads its endpoint back. */
  async function finish(key: KeyRow, created?: EndpointRow): Promise<StoredResponse> {
    // The client may have deleted it meanwhile (it was listed): then the answer says so.
    const response = answer(created ?? (await findEndpointByKey(db, key.id)));
    return idempotency.finish(key, { changes: nothingToChange(), response }, async () => response);
  }

  return {
    async createEndpoint(request: IdempotentRequest): Promise<IdempotentResult> {
      const params = parseWith(createWebhookEndpointSchema, request.body);
      const begun = await idempotency.begin(claimWith, request, params, endpointIntent(newId('we'), params, box.seal(newSigningSecret())));
      if (begun.kind === 'done') return begun.result.response ? { ...begun.result, response: reveal(begun.result.response) } : begun.result;
      return idempotency.run(begun, async () => reveal(await finish(begun.key, begun.intent as EndpointRow | undefined)));
    },
    /** For the completer: a request abandoned after phase 1, driven to its end as a retry would. */
    resumable: {
      method: claimWith.method,
      path: claimWith.path,
      resume: (key) => idempotency.drive(key, () => finish(key)),
    } satisfies Resumable,
  };
}

export interface DeliverySettings {
  allowPrivateUrls: boolean;
  timeoutMs: number;
  retryDelayMs: number;
  retryDelayMaxMs: number;
  windowSeconds: number;
}

export const deliverySettings = (config: Config): DeliverySettings => ({
  allowPrivateUrls: config.WEBHOOK_ALLOW_PRIVATE_URLS,
  timeoutMs: config.WEBHOOK_TIMEOUT_MS,
  retryDelayMs: config.WEBHOOK_RETRY_DELAY_MS,
  retryDelayMaxMs: config.WEBHOOK_RETRY_DELAY_MAX_MS,
  windowSeconds: config.WEBHOOK_RETRY_WINDOW_SECONDS,
});

export type AttemptOutcome = 'succeeded' | 'http_error' | 'timeout' | 'network_error' | 'address_refused' | 'not_signed';

export interface DeliveryObserver {
  attempt(outcome: AttemptOutcome, seconds: number): void;
  deadLettered(): void;
  endpointDisabled(): void;
}

export function createWebhooks(deps: {
  db: Db;
  box: SecretBox;
  events: Events;
  logger: Logger;
  settings: DeliverySettings;
  observe?: DeliveryObserver;
}) {
  const { db, box, events, logger, settings, observe } = deps;

  /** Full jitter: a random wait up to the exponential backoff's ceiling for this attempt. */
  const retryDelayMs = (attempt: number) =>
    Math.random() * Math.min(settings.retryDelayMaxMs, settings.retryDelayMs * 2 ** Math.min(attempt - 1, 40));

  /** One POST, no redirect followed, bounded by the timeout from connection to answer. */
  function post(url: URL, body: string, headers: OutgoingHttpHeaders): Promise<{ status: number } | { error: Error }> {
    const literal = settings.allowPrivateUrls ? undefined : refusedLiteral(url);
    if (literal) return Promise.resolve({ error: literal });
    return new Promise((resolve) => {
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      const req = send(url, {
        method: 'POST',
        headers,
        signal: AbortSignal.timeout(settings.timeoutMs),
        ...(settings.allowPrivateUrls ? {} : { lookup: publicOnlyLookup }),
      });
      req.on('response', (res) => {
        resolve({ status: res.statusCode ?? 0 });
        res.resume(); // the body says nothing we use; drained so the socket is freed
        res.on('error', () => {});
      });
      req.on('error', (error) => resolve({ error }));
      req.end(body);
    });
  }

  async function attempt(target: DeliveryTarget, body: string): Promise<AttemptResult & { outcome: AttemptOutcome }> {
    const timestamp = Math.floor(Date.now() / 1000);
    let secret: string;
    try {
      secret = box.open(target.secret_ciphertext);
    } catch {
      // Sealed under another WEBHOOK_SECRET_KEY than this process has: nothing can be signed. An attempt that
      // failed, like any other, so the delivery still ends (dead-lettered) instead of looping unseen.
      logger.error({ endpoint: target.endpoint_id }, 'webhook secret cannot be opened: is WEBHOOK_SECRET_KEY the one it was sealed with?');
      const error = 'not sent: the endpoint secret cannot be opened with this WEBHOOK_SECRET_KEY';
      return { startedAt: new Date(), durationMs: 0, responseStatus: null, error, ok: false, outcome: 'not_signed' };
    }
    const headers = {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'User-Agent': 'payments-exactly-once-webhooks',
      'webhook-id': target.event_id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signDelivery(secret, target.event_id, timestamp, body),
    };
    const startedAt = new Date();
    const started = performance.now();
    const answer = await post(new URL(target.url), body, headers);
    const durationMs = performance.now() - started;
    if ('status' in answer) {
      const ok = answer.status >= 200 && answer.status < 300;
      const error = ok ? null : answer.status >= 300 && answer.status < 400 ? `answered ${answer.status}: redirects are not followed` : `answered ${answer.status}`;
      return { startedAt, durationMs, responseStatus: answer.status, error, ok, outcome: ok ? 'succeeded' : 'http_error' };
    }
    const { error } = answer;
    const code = (error as { code?: string }).code;
    const outcome: AttemptOutcome =
      code === 'ERR_WEBHOOK_ADDRESS_REFUSED' ? 'address_refused' : error.name === 'TimeoutError' || code === 'ABORT_ERR' ? 'timeout' : 'network_error';
    const message = outcome === 'timeout' ? `no answer within ${settings.timeoutMs} ms` : `${code ? `${code}: ` : ''}${error.message}`;
    return { startedAt, durationMs, responseStatus: null, error: message, ok: false, outcome };
  }

  return {
    /**
     * A delivery job's run: one attempt, recorded with what comes next (done, a job for the next attempt,
     * or dead-lettered) in one transaction. A delivery that is not pending any more is left alone.
     */
    async deliver(id: string, jobAttempt?: number): Promise<DeliveryRow['status'] | 'skipped'> {
      const target = await findDeliveryTarget(db, id);
      const number = (target?.attempts ?? 0) + 1;
      // Done already, or a job for an attempt made meanwhile (a repeat of this job, one the sweep made).
      if (!target || target.status !== 'pending' || (jobAttempt !== undefined && jobAttempt !== number)) return 'skipped';
      if (target.endpoint_status !== 'enabled') {
        // Disabled while this delivery's event was being written: it ends here rather than wait forever.
        await failDelivery(db, id, 'endpoint disabled');
        return 'failed';
      }
      const body = JSON.stringify(
        events.present({ id: target.event_id, account_id: target.account_id, type: target.type, data: target.data, created_at: target.event_created_at }),
      );
      const result = await attempt(target, body);
      observe?.attempt(result.outcome, result.durationMs / 1000);
      const { delivery, disabled } = await inTransaction(db, async (trx): Promise<{ delivery?: DeliveryRow; disabled?: EndpointRow }> => {
        const delivery = await recordAttempt(trx, id, number, result, retryDelayMs(number));
        if (delivery?.status !== 'failed') return { delivery };
        const windowStart = new Date(delivery.window_ends_at.getTime() - settings.windowSeconds * 1000);
        const reason = `every delivery failed for ${settings.windowSeconds} s; the last: ${result.error}`;
        const disabled = await disableFailingEndpoint(trx, delivery.endpoint_id, windowStart, reason);
        if (disabled) await events.record(trx, disabled.account_id, 'webhook_endpoint.disabled', presentEndpoint(disabled));
        return { delivery, disabled };
      });
      if (!delivery) return 'skipped';
      const fields = { delivery: deliveryId(id), event: target.event_id, endpoint: target.endpoint_id, attempt: number, status: result.responseStatus };
      if (delivery.status === 'failed') {
        observe?.deadLettered();
        logger.warn({ ...fields, error: result.error }, 'webhook delivery dead-lettered: its retry window is over');
      } else if (delivery.status === 'pending') {
        logger.info({ ...fields, error: result.error, next_attempt: delivery.next_attempt_at }, 'webhook delivery failed; retried later');
      }
      if (disabled) {
        observe?.endpointDisabled();
        logger.warn({ endpoint: disabled.id }, 'webhook endpoint disabled: it took no delivery for a whole retry window');
      }
      return delivery.status;
    },

    /** Pending deliveries that are due and lost their job get a new one. */
    redrive: (limit: number) => redriveDriverlessDeliveries(db, limit),

    async getEndpoint(accountId: string, id: string) {
      const row = objectId('we').safeParse(id).success ? await findEndpoint(db, accountId, id) : undefined;
      if (!row) throw new NotFoundError(`No webhook endpoint ${id}.`);
      return presentEndpoint(row);
    },

    async listEndpoints(accountId: string) {
      return { object: 'list' as const, data: (await listEndpoints(db, accountId)).map(presentEndpoint), has_more: false };
    },

    async deleteEndpoint(accountId: string, id: string) {
      if (!objectId('we').safeParse(id).success || !(await deleteEndpoint(db, accountId, id))) {
        throw new NotFoundError(`No webhook endpoint ${id}.`);
      }
      return { id, object: 'webhook_endpoint' as const, deleted: true as const };
    },

    /** An event's deliveries with every attempt; the event must be the account's. */
    async listDeliveries(accountId: string, eventId: string) {
      await events.get(accountId, eventId);
      return { object: 'list' as const, data: (await listDeliveries(db, eventId)).map(presentDelivery), has_more: false };
    },
  };
}

export type Webhooks = ReturnType<typeof createWebhooks>;
