// The domain services, built once from their dependencies; the api and the worker both use these.
import { chargeSchema } from './charges/charges.schemas.ts';
import { chargePayments, createChargeStory } from './charges/charges.service.ts';
import type { Config } from './config.ts';
import type { Db } from './db/database.ts';
import type { JobQueue } from './db/job-queue.ts';
import { createEvents, eventSettings } from './events/events.service.ts';
import { createIdempotency } from './idempotency/idempotency.service.ts';
import type { Logger } from './logger.ts';
import { createPayments, type PaymentJobs, type PaymentKind } from './payments/payments.service.ts';
import type { ProcessorClient } from './processor/processor.client.ts';
import { refundSchema } from './refunds/refunds.schemas.ts';
import { createRefundStory, refundPayments } from './refunds/refunds.service.ts';
import { createSecretBox } from './webhooks/secrets.ts';
import { deliveriesOf } from './webhooks/webhooks.repository.ts';
import { webhookEndpointSchema } from './webhooks/webhooks.schemas.ts';
import { createWebhookEndpointStory, createWebhooks, type DeliveryObserver, deliverySettings } from './webhooks/webhooks.service.ts';

export function createServices(deps: {
  config: Config;
  db: Db;
  logger: Logger;
  processor: ProcessorClient;
  queue: JobQueue;
  observeDeliveries?: DeliveryObserver;
}) {
  const { config, db, logger, processor, queue } = deps;
  const idempotency = createIdempotency({
    db,
    logger,
    settings: { leaseSeconds: config.IDEMPOTENCY_LEASE_SECONDS, ttlSeconds: config.IDEMPOTENCY_KEY_TTL_SECONDS },
  });
  // Every event is written with a delivery to each webhook endpoint that wants it, in its own statement.
  // An event shows its object in the order GET of that object answers in (see ObjectKeyOrders).
  const events = createEvents({
    db,
    settings: eventSettings(config),
    fanOut: deliveriesOf(config.WEBHOOK_RETRY_WINDOW_SECONDS),
    objectKeyOrders: {
      charge: Object.keys(chargeSchema.shape),
      refund: Object.keys(refundSchema.shape),
      webhook_endpoint: Object.keys(webhookEndpointSchema.shape),
    },
  });
  const payments = createPayments({
    db,
    processor,
    queue,
    events,
    idempotency,
    logger,
    settings: {
      keyRetentionSeconds: config.PROCESSOR_KEY_RETENTION_SECONDS,
      lookUpMarginSeconds: lookUpMargin(config),
      settleWindowSeconds: config.SETTLE_WINDOW_SECONDS,
    },
  });
  const box = createSecretBox(config.WEBHOOK_SECRET_KEY);
  const webhooks = createWebhooks({
    db,
    box,
    events,
    logger,
    observe: deps.observeDeliveries,
    settings: deliverySettings(config),
  });
  // The stories of the three POSTs, each told in order in its own file.
  const charges = createChargeStory({ idempotency, payments });
  const refunds = createRefundStory({ idempotency, payments, events });
  const endpoints = createWebhookEndpointStory({ db, box, idempotency });
  return {
    processor,
    queue,
    idempotency,
    events,
    payments,
    webhooks,
    createCharge: charges.createCharge,
    createRefund: refunds.createRefund,
    createWebhookEndpoint: endpoints.createEndpoint,
    /** Every kind of idempotent request, as the completer resumes it. */
    resumables: [charges.resumable, refunds.resumable, endpoints.resumable],
    /** The settle and reconcile jobs of every kind of payment, by the kind jobs carry. */
    paymentJobs: { charge: payments.jobsFor(chargePayments), refund: payments.jobsFor(refundPayments) } satisfies Record<PaymentKind, PaymentJobs>,
  };
}

export type Services = ReturnType<typeof createServices>;

/**
 * A lookup costs one extra call and is always safe (the processor searches its records, not its cache);
 * a resend that arrives after the processor forgot the key charges twice. So the switch to looking up
 * comes early: an hour before the retention ends, or at least two request budgets (a send's longest
 * flight), and never later than half the retention.
 */
function lookUpMargin(config: Config): number {
  const atLeast = Math.max(3600, (2 * config.REQUEST_TIMEOUT_MS) / 1000);
  return Math.min(config.PROCESSOR_KEY_RETENTION_SECONDS / 2, atLeast);
}
