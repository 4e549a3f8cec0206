import { type Selectable, sql } from 'kysely';
import type { DbOrTrx } from '../db/database.ts';
import type { ChargesTable } from '../db/schema.ts';

export type ChargeRow = Selectable<ChargesTable>;

export interface NewCharge {
  id: string;
  account_id: string;
  idempotency_key_id: string;
  amount: number;
  currency: string;
  source: string;
  description: string | null;
  metadata: Record<string, string>;
  processor_idempotency_key: string;
}

export async function insertPendingCharge(db: DbOrTrx, charge: NewCharge): Promise<ChargeRow> {
  return db
    .insertInto('charges')
    .values({ ...charge, metadata: JSON.stringify(charge.metadata), status: 'pending' })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findChargeByKeyId(db: DbOrTrx, keyId: string): Promise<ChargeRow | undefined> {
  return db.selectFrom('charges').selectAll().where('idempotency_key_id', '=', keyId).executeTakeFirst();
}

export async function lockChargeByKeyId(db: DbOrTrx, keyId: string): Promise<ChargeRow | undefined> {
  return db.selectFrom('charges').selectAll().where('idempotency_key_id', '=', keyId).forUpdate().executeTakeFirst();
}

export async function lockCharge(db: DbOrTrx, accountId: string, id: string): Promise<ChargeRow | undefined> {
  return db
    .selectFrom('charges')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('id', '=', id)
    .forUpdate()
    .executeTakeFirst();
}

export async function findCharge(db: DbOrTrx, accountId: string, id: string): Promise<ChargeRow | undefined> {
  return db
    .selectFrom('charges')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('id', '=', id)
    .executeTakeFirst();
}

export type ChargeSettlement =
  | { status: 'succeeded'; processor_reference: string; failure_code: null; failure_message: null }
  | { status: 'failed'; processor_reference: string | null; failure_code: string; failure_message: string };

export const PROCESSOR_UNAVAILABLE = 'processor_unavailable';

/**
 * Moves an unsettled charge to its final status and returns the row as it now is. Unsettled: pending, or
 * failed only because the processor stayed unavailable (an operator may redrive those). Any other
 * charge is already final and is left alone.
 */
export async function settleCharge(db: DbOrTrx, id: string, settlement: ChargeSettlement): Promise<ChargeRow> {
  const updated = await db
    .updateTable('charges')
    .set({ ...settlement, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where((eb) =>
      eb.or([
        eb('status', '=', 'pending'),
        eb.and([eb('status', '=', 'failed'), eb('failure_code', '=', PROCESSOR_UNAVAILABLE)]),
      ]),
    )
    .returningAll()
    .executeTakeFirst();
  return updated ?? (await db.selectFrom('charges').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
}

export async function findChargeById(db: DbOrTrx, id: string): Promise<ChargeRow | undefined> {
  return db.selectFrom('charges').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Changes how much of a charge is refunded (or held for refunds in flight); the row must be locked. */
export async function addToAmountRefunded(db: DbOrTrx, id: string, delta: number): Promise<void> {
  await db
    .updateTable('charges')
    .set((eb) => ({ amount_refunded: eb('amount_refunded', '+', delta), updated_at: sql<Date>`now()` }))
    .where('id', '=', id)
    .execute();
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
