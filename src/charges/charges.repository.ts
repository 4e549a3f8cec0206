import { type Selectable, sql } from 'kysely';
import { cte } from '../db/ctes.ts';
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
 * A new charge, pending, as the intent of the statement that claims its key (`claimed`). Its processor key
 * is derived from our key row, so every retry, resume and later settle reuses it.
 */
export function chargeIntent(id: string, params: CreateChargeParams): Intent {
  return {
    ctes: cte('intent', ['claimed'], (ref) => sql`
      insert into charges (id, account_id, idempotency_key_id, amount, currency, source, description, metadata,
                           status, processor_idempotency_key)
      select ${id}, claimed.account_id, claimed.id, ${params.amount}::bigint, ${params.currency},
             ${params.source}, ${params.description ?? null}::text, ${JSON.stringify(params.metadata ?? {})}::jsonb,
             'pending', 'charge_' || claimed.id
      from ${ref('claimed')} claimed
      returning *`),
  };
}
