// Queries on webhook endpoints and deliveries. A delivery's job is a row of pg-boss's `webhook` queue made
// by our own INSERT, so it can be written in the same statement as the event (see deliveriesOf).
import { type RawBuilder, type Selectable, sql } from 'kysely';
import { cte, followedBy, slot } from '../db/ctes.ts';
import type { DbOrTrx } from '../db/database.ts';
import { JOB_SCHEMA, WEBHOOK_QUEUE } from '../db/job-queue.ts';
import type { WebhookDeliveriesTable, WebhookDeliveryAttemptsTable, WebhookEndpointsTable } from '../db/schema.ts';
import type { EventFanOut } from '../events/events.repository.ts';
import type { Intent } from '../idempotency/idempotency.repository.ts';
import type { CreateWebhookEndpointParams } from './webhooks.schemas.ts';

export type EndpointRow = Selectable<WebhookEndpointsTable>;
export type DeliveryRow = Selectable<WebhookDeliveriesTable>;
export type AttemptRow = Selectable<WebhookDeliveryAttemptsTable>;

/**
 * An INSERT of one `webhook` job per row of `source` (`id`: the delivery, `next_attempt_at`: when it is
 * due, `attempts`: how many it has had), with the queue's own settings, as pg-boss's send would make it.
 * The job names the attempt it is for, so a stale or repeated job is told apart and does nothing; its
 * singleton key is the delivery's id, so the sweep can tell a delivery that lost its job.
 */
export function deliveryJobsFor(source: RawBuilder<unknown>): RawBuilder<unknown> {
  return sql`
    insert into ${sql.table(`${JOB_SCHEMA}.job`)}
      (name, data, singleton_key, start_after, retry_limit, retry_delay, retry_backoff, retry_delay_max,
       expire_seconds, deletion_seconds, keep_until, policy, dead_letter)
    select q.name, jsonb_build_object('delivery', d.id, 'attempt', d.attempts + 1), d.id::text, d.next_attempt_at, q.retry_limit, q.retry_delay,
           q.retry_backoff, q.retry_delay_max, q.expire_seconds, q.deletion_seconds,
           d.next_attempt_at + make_interval(secs => q.retention_seconds), q.policy, q.dead_letter
    from ${source} d join ${sql.table(`${JOB_SCHEMA}.queue`)} q on q.name = ${WEBHOOK_QUEUE}`;
}

/**
 * An event's fan-out to webhooks (see EventFanOut): for each enabled endpoint of its account that wants its
 * type, a delivery (`deliveries`) retried for `windowSeconds`, and its job (`delivery_jobs`).
 */
export function deliveriesOf(windowSeconds: number): EventFanOut {
  return followedBy(
    cte('deliveries', ['event'], (ref) => sql`
      insert into webhook_deliveries (event_id, endpoint_id, account_id, window_ends_at)
      select event.id, w.id, event.account_id, now() + make_interval(secs => ${windowSeconds})
      from ${ref('event')} event
      join webhook_endpoints w on w.account_id = event.account_id and w.status = 'enabled'
        and w.enabled_events && array[event.type, '*']
      -- An endpoint being deleted right now is waited for and then skipped, never a foreign key error
      -- that would undo the change this event records.
      for key share of w
      returning id, next_attempt_at, attempts`),
    cte('delivery_jobs', ['deliveries'], (ref) => deliveryJobsFor(ref('deliveries'))),
  );
}

/**
 * A new endpoint with its sealed signing secret, as the intent of the statement that claims its key; never
 * written at once (`when` is false): the careful way counts the account's endpoints first.
 */
export function endpointIntent(id: string, params: CreateWebhookEndpointParams, sealedSecret: string): Intent {
  return {
    when: NEVER_AT_ONCE,
    ctes: ENDPOINT_INTENT,
    values: { endpoint_id: id, endpoint_url: params.url, endpoint_events: params.enabled_events, endpoint_secret: sealedSecret },
  };
}

const NEVER_AT_ONCE = sql<boolean>`false`;
const ENDPOINT_INTENT = cte('intent', ['claimed'], (ref) => sql`
  insert into webhook_endpoints (id, account_id, idempotency_key_id, url, enabled_events, secret_ciphertext)
  select ${slot('endpoint_id')}, claimed.account_id, claimed.id, ${slot('endpoint_url')}, ${slot('endpoint_events')}::text[],
         ${slot('endpoint_secret')}
  from ${ref('claimed')} claimed
  returning *`);

/**
 * Inside a transaction: how many endpoints the account has, its creates serialised. NO KEY UPDATE on the
 * account's row does not conflict with the key-share locks that foreign keys to the account (the request's
 * own key row among them) hold.
 */
export async function countEndpointsLocked(trx: DbOrTrx, accountId: string): Promise<number> {
  await trx.selectFrom('accounts').select('id').where('id', '=', accountId).forNoKeyUpdate().execute();
  const { count } = await trx
    .selectFrom('webhook_endpoints')
    .select((eb) => eb.fn.countAll<string>().as('count'))
    .where('account_id', '=', accountId)
    .executeTakeFirstOrThrow();
  return Number(count);
}

export async function findEndpoint(db: DbOrTrx, accountId: string, id: string): Promise<EndpointRow | undefined> {
  return db.selectFrom('webhook_endpoints').selectAll().where('account_id', '=', accountId).where('id', '=', id).executeTakeFirst();
}

export async function findEndpointByKey(db: DbOrTrx, keyId: string): Promise<EndpointRow | undefined> {
  return db.selectFrom('webhook_endpoints').selectAll().where('idempotency_key_id', '=', keyId).executeTakeFirst();
}

export async function listEndpoints(db: DbOrTrx, accountId: string): Promise<EndpointRow[]> {
  return db
    .selectFrom('webhook_endpoints')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute();
}

export async function deleteEndpoint(db: DbOrTrx, accountId: string, id: string): Promise<boolean> {
  const result = await db.deleteFrom('webhook_endpoints').where('account_id', '=', accountId).where('id', '=', id).executeTakeFirst();
  return Number(result.numDeletedRows) === 1;
}

/** An event's deliveries, each with its attempts in order. */
export async function listDeliveries(db: DbOrTrx, eventId: string): Promise<(DeliveryRow & { attempt_log: AttemptRow[] })[]> {
  const { rows } = await sql<DeliveryRow & { attempt_log: AttemptRow[] }>`
    select d.*, coalesce(
      (select json_agg(a order by a.attempt) from webhook_delivery_attempts a where a.delivery_id = d.id), '[]') as attempt_log
    from webhook_deliveries d where d.event_id = ${eventId}
    order by d.created_at, d.id`.execute(db);
  return rows;
}

/** What one delivery attempt needs: the delivery, its event, and its endpoint. */
export type DeliveryTarget = DeliveryRow & {
  type: string;
  data: Record<string, unknown>;
  event_created_at: Date;
  url: string;
  secret_ciphertext: string;
  endpoint_status: string;
};

export async function findDeliveryTarget(db: DbOrTrx, id: string): Promise<DeliveryTarget | undefined> {
  const { rows } = await sql<DeliveryTarget>`
    select d.*, e.type, e.data, e.created_at as event_created_at, w.url, w.secret_ciphertext, w.status as endpoint_status
    from webhook_deliveries d
    join events e on e.id = d.event_id
    join webhook_endpoints w on w.id = d.endpoint_id
    where d.id = ${id}`.execute(db);
  return rows[0];
}

export interface AttemptResult {
  startedAt: Date;
  durationMs: number;
  responseStatus: number | null;
  error: string | null;
  ok: boolean;
}

/**
 * Records attempt `attempt` (1-based) of a pending delivery: succeeded, due again after `retryDelayMs`, or
 * failed for good (dead-lettered) when that would pass its window; with its job for the next attempt.
 * Undefined when the attempt was recorded already (another run of the same delivery got there first), or
 * the endpoint was deleted (its deliveries with it).
 *
 * Lock order: the endpoint, then its deliveries, as a delete of the endpoint takes them (its row, then
 * the cascade). This transaction updates the endpoint after the delivery (last_success_at, or disabled);
 * had it locked the delivery first, a delete in between would deadlock with it. NO KEY UPDATE
 * is the lock those updates take anyway: recordings for one endpoint queue here, so one that disables it
 * and fails its pending deliveries never waits for one that holds such a delivery and waits for the
 * endpoint. It does not conflict with the KEY SHARE of an event fanning out to the endpoint.
 */
export async function recordAttempt(
  trx: DbOrTrx,
  id: string,
  attempt: number,
  result: AttemptResult,
  retryDelayMs: number,
): Promise<DeliveryRow | undefined> {
  const { rows: endpoint } = await sql`
    select w.id from webhook_endpoints w
    where w.id = (select d.endpoint_id from webhook_deliveries d where d.id = ${id})
    for no key update`.execute(trx);
  if (!endpoint.length) return undefined;
  const next = sql`now() + make_interval(secs => ${retryDelayMs / 1000})`;
  const { rows } = await sql<DeliveryRow>`
    update webhook_deliveries
    set attempts = ${attempt},
        status = case when ${result.ok} then 'succeeded' when ${next} > window_ends_at then 'failed' else 'pending' end,
        next_attempt_at = case when ${result.ok} or ${next} > window_ends_at then next_attempt_at else ${next} end,
        delivered_at = case when ${result.ok} then now() end,
        last_error = ${result.error}
    where id = ${id} and status = 'pending' and attempts = ${attempt - 1}
    returning *`.execute(trx);
  const delivery = rows[0];
  if (!delivery) return undefined;
  await trx
    .insertInto('webhook_delivery_attempts')
    .values({
      delivery_id: id,
      attempt,
      started_at: result.startedAt,
      duration_ms: Math.round(result.durationMs),
      response_status: result.responseStatus,
      error: result.error,
    })
    .execute();
  if (delivery.status === 'pending') {
    const due = sql`(select ${id}::uuid as id, ${delivery.next_attempt_at}::timestamptz as next_attempt_at, ${attempt}::int as attempts)`;
    await sql`${deliveryJobsFor(due)}`.execute(trx);
  } else if (delivery.status === 'succeeded') {
    await trx.updateTable('webhook_endpoints').set({ last_success_at: sql<Date>`now()` }).where('id', '=', delivery.endpoint_id).execute();
  }
  return delivery;
}

/** Ends a pending delivery without sending it (its endpoint was disabled meanwhile). */
export async function failDelivery(db: DbOrTrx, id: string, error: string): Promise<void> {
  await db.updateTable('webhook_deliveries').set({ status: 'failed', last_error: error }).where('id', '=', id).where('status', '=', 'pending').execute();
}

/**
 * Disables an endpoint that has not taken a delivery since `since` (the whole window of one that just
 * failed for good), and fails its other pending deliveries; undefined when it took one meanwhile.
 */
export async function disableFailingEndpoint(trx: DbOrTrx, endpointId: string, since: Date, reason: string): Promise<EndpointRow | undefined> {
  const endpoint = await trx
    .updateTable('webhook_endpoints')
    .set({ status: 'disabled', disabled_reason: reason, updated_at: sql<Date>`now()` })
    .where('id', '=', endpointId)
    .where('status', '=', 'enabled')
    .where((eb) => eb.or([eb('last_success_at', 'is', null), eb('last_success_at', '<', since)]))
    .returningAll()
    .executeTakeFirst();
  if (endpoint) {
    await trx
      .updateTable('webhook_deliveries')
      .set({ status: 'failed', last_error: 'endpoint disabled' })
      .where('endpoint_id', '=', endpointId)
      .where('status', '=', 'pending')
      .execute();
  }
  return endpoint;
}

/**
 * An operator's redelivery: failed deliveries of an event or of an endpoint become pending again, due now,
 * with a new window and a job each; their endpoints are enabled again. Returns how many.
 * The endpoints are locked first (`locked`: a delivery is updated only once its endpoint's row came out of
 * it), in the order a delete and a delivery take them (see recordAttempt).
 */
export async function redeliverFailed(
  db: DbOrTrx,
  target: { eventId: string } | { endpointId: string },
  windowSeconds: number,
): Promise<number> {
  const which = 'eventId' in target ? sql`d.event_id = ${target.eventId}` : sql`d.endpoint_id = ${target.endpointId}`;
  const endpoints =
    'eventId' in target
      ? sql`w.id in (select d.endpoint_id from webhook_deliveries d where ${which} and d.status = 'failed')`
      : sql`w.id = ${target.endpointId}`;
  const { rows } = await sql<{ redelivered: number }>`
    with locked as (
      select w.id from webhook_endpoints w where ${endpoints} order by w.id for no key update
    ), redelivered as (
      update webhook_deliveries d
      set status = 'pending', next_attempt_at = now(), window_ends_at = now() + make_interval(secs => ${windowSeconds}),
          last_error = null
      where ${which} and d.status = 'failed' and d.endpoint_id in (select id from locked)
      returning d.id, d.next_attempt_at, d.attempts, d.endpoint_id
    ), enabled as (
      update webhook_endpoints w set status = 'enabled', disabled_reason = null, updated_at = now()
      where w.status = 'disabled' and w.id in (select id from locked)
        ${'eventId' in target ? sql`and w.id in (select endpoint_id from redelivered)` : sql``}
    ), jobs as (${deliveryJobsFor(sql`redelivered`)})
    select count(*)::int as redelivered from redelivered`.execute(db);
  return rows[0]?.redelivered ?? 0;
}

/** Gives pending deliveries that are due and have no live job (it ran out of retries on errors) a new one. */
export async function redriveDriverlessDeliveries(db: DbOrTrx, limit: number): Promise<number> {
  const { rows } = await sql<{ redriven: number }>`
    with driverless as (
      select d.id, now() as next_attempt_at, d.attempts from webhook_deliveries d
      where d.status = 'pending' and d.next_attempt_at <= now()
        and not exists (
          select 1 from ${sql.table(`${JOB_SCHEMA}.job`)} j
          where j.name = ${WEBHOOK_QUEUE} and j.singleton_key = d.id::text and j.state < 'completed')
      order by d.next_attempt_at
      limit ${limit}
    ), jobs as (${deliveryJobsFor(sql`driverless`)})
    select count(*)::int as redriven from driverless`.execute(db);
  return rows[0]?.redriven ?? 0;
}

/** Deliveries waiting (pending) and dead-lettered (failed, kept with their event), for the gauges. */
export async function deliveryBacklog(db: DbOrTrx): Promise<{ pending: number; failed: number }> {
  const { rows } = await sql<{ pending: number; failed: number }>`
    select (select count(*) from webhook_deliveries where status = 'pending')::int as pending,
           (select count(*) from webhook_deliveries where status = 'failed')::int as failed`.execute(db);
  return rows[0] ?? { pending: 0, failed: 0 };
}
