import { type RawBuilder, type Selectable, sql } from 'kysely';
import { cte, slot } from '../db/ctes.ts';
import type { DbOrTrx } from '../db/database.ts';
import type { ChargesTable } from '../db/schema.ts';
import type { Intent } from '../idempotency/idempotency.repository.ts';
import type { CreateChargeParams } from './charges.schemas.ts';

export type ChargeRow = Selectable<ChargesTable>;

export async function findCharge(db: DbOrTrx, accountId: string, id: string): Promise<ChargeRow | undefined> {
  return db
    .selectFrom('charges')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('id', '=', id)
    .executeTakeFirst();
}

/**
 * Newest first, starting after the charge `afterId`. The cursor row is read inside the query: created_at
 * has microseconds that a JavaScript Date would round away.
 */
export async function listCharges(db: DbOrTrx, accountId: string, limit: number, afterId?: string): Promise<ChargeRow[]> {
  let query = db
    .selectFrom('charges')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit);
  if (afterId) {
    query = query.where(
      sql<boolean>`(created_at, id) < (select c.created_at, c.id from charges c where c.id = ${afterId})`,
    );
  }
  return query.execute();
}

/**
 * A charge as presentCharge (charges.service.ts) presents it, built by a statement from the row `alias`:
 * the same keys in the same order and the same values, for an event a statement writes with the change
 * (test/webhooks/events.test.ts compares such an event with GET of the charge, byte for byte).
 */
export const chargeJson = (alias: string): RawBuilder<unknown> =>
  sql.raw(
    `json_build_object('id', ${alias}.id, 'object', 'charge', 'amount', ${alias}.amount, 'currency', ${alias}.currency, ` +
      `'status', ${alias}.status, 'amount_refunded', ${alias}.amount_refunded, 'refunded', ${alias}.amount_refunded = ${alias}.amount, ` +
      `'description', ${alias}.description, 'metadata', ${alias}.metadata, 'failure_code', ${alias}.failure_code, ` +
      `'failure_message', ${alias}.failure_message, 'processor_reference', ${alias}.processor_reference, ` +
      `'created', to_char(${alias}.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))`,
  );

// A new charge's intent, built once: its values are slots (see chargeIntent).
const CHARGE_INTENT = cte('intent', ['claimed'], (ref) => sql`
  insert into charges (id, account_id, idempotency_key_id, amount, currency, source, description, metadata,
                       status, processor_idempotency_key)
  select ${slot('charge_id')}, claimed.account_id, claimed.id, ${slot('charge_amount')}::bigint, ${slot('charge_currency')},
         ${slot('charge_source')}, ${slot('charge_description')}::text, ${slot('charge_metadata')}::jsonb,
         'pending', 'charge_' || claimed.id
  from ${ref('claimed')} claimed
  returning *`);

/**
 * A new charge, pending, as the intent of the statement that claims its key (`claimed`). Its processor key
 * is derived from our key row, so every retry, resume and later settle reuses it.
 */
export function chargeIntent(id: string, params: CreateChargeParams): Intent {
  return {
    ctes: CHARGE_INTENT,
    values: {
      charge_id: id,
      charge_amount: params.amount,
      charge_currency: params.currency,
      charge_source: params.source,
      charge_description: params.description ?? null,
      charge_metadata: JSON.stringify(params.metadata ?? {}),
    },
  };
}
