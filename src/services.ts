// The domain services, built once from their dependencies; the api and the worker both use these.
import { createChargeOperation, createChargeSettler } from './charges/charges.service.ts';
import type { Config } from './config.ts';
import type { Db } from './db/database.ts';
import { createIdempotency, type IdempotentOperation } from './idempotency/idempotency.service.ts';
import type { JobQueue } from './jobs/queue.ts';
import type { Logger } from './logger.ts';
import type { ProcessorClient } from './processor/processor.client.ts';
import { createRefundOperation, createRefundSettler } from './refunds/refunds.service.ts';

export function createServices(deps: {
  config: Config;
  db: Db;
  logger: Logger;
  processor: ProcessorClient;
  queue: JobQueue;
}) {
  const { config, db, logger, processor, queue } = deps;
  const idempotency = createIdempotency({
    db,
    logger,
    settings: { leaseSeconds: config.IDEMPOTENCY_LEASE_SECONDS, ttlSeconds: config.IDEMPOTENCY_KEY_TTL_SECONDS },
  });
  const createCharge = createChargeOperation({ db, processor, queue });
  const createRefund = createRefundOperation({ db, processor, queue });
  return {
    processor,
    queue,
    idempotency,
    createCharge,
    createRefund,
    /** Every idempotent operation, for the completer. */
    operations: [createCharge, createRefund] as IdempotentOperation<unknown>[],
    settlers: {
      charge: createChargeSettler({ db, processor, queue }),
      refund: createRefundSettler({ db, processor, queue }),
    },
  };
}

export type Services = ReturnType<typeof createServices>;
