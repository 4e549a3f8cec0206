// Every migration, in order. Append only: a landed migration is never edited.
import type { Migration } from 'kysely/migration';
import * as m0001 from './0001_accounts.ts';
import * as m0002 from './0002_idempotency_keys_and_charges.ts';
import * as m0003 from './0003_job_queue.ts';
import * as m0004 from './0004_refunds.ts';
import * as m0005 from './0005_reconciliation.ts';
import * as m0006 from './0006_rate_limits.ts';
import * as m0007 from './0007_events_and_webhooks.ts';

export const migrations: Record<string, Migration> = {
  '0001_accounts': m0001,
  '0002_idempotency_keys_and_charges': m0002,
  '0003_job_queue': m0003,
  '0004_refunds': m0004,
  '0005_reconciliation': m0005,
  '0006_rate_limits': m0006,
  '0007_events_and_webhooks': m0007,
};
