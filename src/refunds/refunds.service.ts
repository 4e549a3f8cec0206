// Refunds: what a refund is to the payments module, its create flow as an idempotent operation, the read.
// A charge's amount_refunded counts refunds that succeeded, those in flight, and those whose outcome is
// not known yet, so the refunded total can never pass the charge: each new refund reserves its amount
// under the charge's row lock, and only a refund the processor answered "failed" gives it back.
import { sql } from 'kysely';
import type { Db } from '../db/database.ts';
import { NotFoundError, ProblemError } from '../errors.ts';
import { newId } from '../ids.ts';
import type { Payments, PaymentType } from '../payments/payments.service.ts';
import { objectId, parseWith } from '../validation.ts';
import {
  changeAmountHeld,
  chargeReferenceOf,
  findRefund,
  lockChargeForRefund,
  type RefundRow,
} from './refunds.repository.ts';
import { type CreateRefundParams, createRefundSchema, type Refund } from './refunds.schemas.ts';

export function presentRefund(refund: RefundRow): Refund {
  return {
    id: refund.id,
    object: 'refund',
    amount: refund.amount,
    currency: refund.currency,
    charge: refund.charge_id,
    reason: refund.reason,
    status: refund.status,
    failure_code: refund.failure_code,
    failure_message: refund.failure_message,
    processor_reference: refund.processor_reference,
    created: refund.created_at.toISOString(),
  };
}

export const refundPayments: PaymentType<RefundRow> = {
  kind: 'refund',
  table: 'refunds',
  processorRequest: async (db, refund) => ({ charge: await chargeReferenceOf(db, refund.charge_id), amount: refund.amount }),
  // The processor said no: the amount was never paid out, so the charge may be refunded by it again.
  afterFailed: async (trx, refund) => {
    await lockChargeForRefund(trx, refund.account_id, refund.charge_id);
    await changeAmountHeld(trx, refund.charge_id, -refund.amount);
  },
  present: presentRefund,
  failedTitle: 'Refund failed',
};

const notRefundable = (detail: string) =>
  new ProblemError(409, 'charge_not_refundable', 'Charge not refundable', detail);

export function createRefundOperation(deps: { payments: Payments }) {
  return deps.payments.operation<CreateRefundParams, RefundRow>(refundPayments, {
    path: '/v1/refunds',
    parse: (body) => parseWith(createRefundSchema, body),
    // At once when the charge plainly has the amount left: the refund, pending, and the amount held on its
    // charge, in the statement that claims the key. Two refunds racing for the last of a charge cannot both
    // hold it (the charge's CHECK constraint fails the later statement, which then goes the careful way).
    intent: (key, params) => {
      const amount = sql`coalesce(${params.amount ?? null}::bigint, c.amount - c.amount_refunded)`;
      return {
        when: sql<boolean>`exists (select 1 from charges c
          where c.id = ${params.charge} and c.account_id = ${key.accountId} and c.status = 'succeeded'
            and c.amount_refunded < c.amount and c.amount_refunded + ${amount} <= c.amount)`,
        ctes: sql`intent as (
          insert into refunds (id, account_id, charge_id, idempotency_key_id, amount, currency, reason, status,
                               processor_idempotency_key)
          select ${newId('re')}, c.account_id, c.id, claimed.id, ${amount}, c.currency, ${params.reason ?? null}::text,
                 'pending', ${`refund_${key.id}`}
          from claimed join charges c on c.id = ${params.charge} and c.account_id = claimed.account_id
          returning *
        ), held as (
          update charges c set amount_refunded = c.amount_refunded + intent.amount, updated_at = now()
          from intent where c.id = intent.charge_id)`,
      };
    },
    // The careful way decides under the charge's row lock, and says why a refund cannot be made.
    async refusal(trx, key, params) {
      const charge = await lockChargeForRefund(trx, key.account_id, params.charge);
      if (!charge) return new NotFoundError(`No charge ${params.charge}.`);
      if (charge.status !== 'succeeded') {
        return notRefundable(`Charge ${charge.id} is ${charge.status}; only a succeeded charge can be refunded.`);
      }
      const left = charge.amount - charge.amount_refunded;
      if (left === 0) return notRefundable(`Charge ${charge.id} is already fully refunded.`);
      const amount = params.amount ?? left;
      if (amount > left) {
        return new ProblemError(
          409,
          'refund_exceeds_charge',
          'Refund exceeds charge',
          `Refund of ${amount} exceeds the ${left} left to refund on charge ${charge.id}.`,
        );
      }
      return undefined;
    },
  });
}

export async function getRefund(db: Db, accountId: string, id: string) {
  const refund = objectId('re').safeParse(id).success ? await findRefund(db, accountId, id) : undefined;
  if (!refund) throw new NotFoundError(`No refund ${id}.`);
  return presentRefund(refund);
}
