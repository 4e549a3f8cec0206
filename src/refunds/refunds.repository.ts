import { type Selectable, sql } from 'kysely';
import type { DbOrTrx } from '../db/database.ts';
import type { RefundsTable } from '../db/schema.ts';

export type RefundRow = Selectable<RefundsTable>;

export async function findRefund(db: DbOrTrx, accountId: string, id: string): Promise<RefundRow | undefined> {
  return db
    .selectFrom('refunds')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('id', '=', id)
    .executeTakeFirst();
}

// A refund's view of the charge it refunds: the few columns it needs, read from the charges table itself
// so that refunds depend on no code of charges.

export interface RefundableCharge {
  id: string;
  status: string;
  amount: number;
  amount_refunded: number;
  currency: string;
}

/** Locks the charge a new refund would refund, so concurrent refunds reserve their amounts one at a time. */
export async function lockChargeForRefund(
  db: DbOrTrx,
  accountId: string,
  chargeId: string,
): Promise<RefundableCharge | undefined> {
  return db
    .selectFrom('charges')
    .select(['id', 'status', 'amount', 'amount_refunded', 'currency'])
    .where('account_id', '=', accountId)
    .where('id', '=', chargeId)
    .forUpdate()
    .executeTakeFirst();
}

/**
 * Changes how much of a charge is held by refunds: succeeded, in flight, or with their outcome unknown.
 * The charge's CHECK constraint keeps it within the charged amount.
 */
export async function changeAmountHeld(db: DbOrTrx, chargeId: string, delta: number): Promise<void> {
  await db
    .updateTable('charges')
    .set((eb) => ({ amount_refunded: eb('amount_refunded', '+', delta), updated_at: sql<Date>`now()` }))
    .where('id', '=', chargeId)
    .execute();
}

/** The processor's reference of the charge being refunded: what the processor refunds. */
export async function chargeReferenceOf(db: DbOrTrx, chargeId: string): Promise<string> {
  const row = await db
    .selectFrom('charges')
    .select('processor_reference')
    .where('id', '=', chargeId)
    .executeTakeFirstOrThrow();
  return row.processor_reference!;
}
