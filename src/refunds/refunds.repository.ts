import { type Selectable, sql } from 'kysely';
import { type Ctes, cte, followedBy, slot } from '../db/ctes.ts';
import { type ChargeRow, chargeJson } from '../charges/charges.repository.ts';
import type { DbOrTrx } from '../db/database.ts';
import type { RefundsTable } from '../db/schema.ts';
import type { Intent } from '../idempotency/idempotency.repository.ts';
import type { CreateRefundParams } from './refunds.schemas.ts';

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
 * The charge's CHECK constraint keeps it within the charged amount. Returns the charge as it now is.
 */
export async function changeAmountHeld(db: DbOrTrx, chargeId: string, delta: number): Promise<ChargeRow> {
  return db
    .updateTable('charges')
    .set((eb) => ({ amount_refunded: eb('amount_refunded', '+', delta), updated_at: sql<Date>`now()` }))
    .where('id', '=', chargeId)
    .returningAll()
    .executeTakeFirstOrThrow();
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

/**
 * New refunds, pending, each with its amount held on its charge, as the intent of the statement that claims
 * its key, when the charge plainly has the amount left (`when`; otherwise nothing is written and the claim
 * goes the careful way); with the charge's own event (`chargeRefunded`: CTEs that write it from `held`, the
 * charge as it now is). Two refunds racing for the last of a charge cannot both hold it: the charge's CHECK
 * constraint fails the later statement, which then goes the careful way too. Built once, so every refund's
 * claim is the same statement, filled in.
 */
export function refundIntents(chargeRefunded: Ctes<string, 'held'>) {
  const ctes = followedBy(REFUND_INTENT, chargeRefunded);
  return (id: string, accountId: string, params: CreateRefundParams, chargeEventId: string): Intent => ({
    when: REFUND_FITS,
    ctes,
    values: {
      refund_id: id,
      refund_account: accountId,
      refund_charge: params.charge,
      refund_amount: params.amount ?? null,
      refund_reason: params.reason ?? null,
      source_event_id: chargeEventId,
    },
  });
}

// A refund's intent and its condition, built once: their values are slots (see refundIntents).
const REFUND_AMOUNT = sql`coalesce(${slot('refund_amount')}::bigint, c.amount - c.amount_refunded)`;
const REFUND_FITS = sql<boolean>`exists (select 1 from charges c
  where c.id = ${slot('refund_charge')} and c.account_id = ${slot('refund_account')} and c.status = 'succeeded'
    and c.amount_refunded < c.amount and c.amount_refunded + ${REFUND_AMOUNT} <= c.amount)`;
const REFUND_INTENT = followedBy(
  cte('intent', ['claimed'], (ref) => sql`
    insert into refunds (id, account_id, charge_id, idempotency_key_id, amount, currency, reason, status,
                         processor_idempotency_key)
    select ${slot('refund_id')}, c.account_id, c.id, claimed.id, ${REFUND_AMOUNT}, c.currency, ${slot('refund_reason')}::text,
           'pending', 'refund_' || claimed.id
    from ${ref('claimed')} claimed join charges c on c.id = ${slot('refund_charge')} and c.account_id = claimed.account_id
    returning *`),
  cte('held', ['intent'], (ref) => sql`
    update charges c set amount_refunded = c.amount_refunded + intent.amount, updated_at = now()
    from ${ref('intent')} intent where c.id = intent.charge_id
    returning c.account_id, ${chargeJson('c')} as object`),
);
