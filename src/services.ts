// The domain services, built once from their dependencies; the api and the worker both use these.
import { createChargeOperation } from './charges/charges.service.ts';
import type { Config } from './config.ts';
import type { Db } from './db/database.ts';
import { createIdempotency } from './idempotency/idempotency.service.ts';
import type { Logger } from './logger.ts';
import type { ProcessorClient } from './processor/processor.client.ts';

export function createServices(deps: { config: Config; db: Db; logger: Logger; processor: ProcessorClient }) {
  const { config, db, logger, processor } = deps;
  const idempotency = createIdempotency({
    db,
    logger,
    settings: { leaseSeconds: config.IDEMPOTENCY_LEASE_SECONDS, ttlSeconds: config.IDEMPOTENCY_KEY_TTL_SECONDS },
  });
  return {
    processor,
    idempotency,
    createCharge: createChargeOperation({ db, processor }),
  };
}

export type Services = ReturnType<typeof createServices>;
