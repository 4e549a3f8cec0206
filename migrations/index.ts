// Every migration, in order. Append only: a landed migration is never edited.
import type { Migration } from 'kysely/migration';
import * as m0001 from './0001_accounts.ts';
import * as m0002 from './0002_idempotency_keys_and_charges.ts';

export const migrations: Record<string, Migration> = {
  '0001_accounts': m0001,
  '0002_idempotency_keys_and_charges': m0002,
};
