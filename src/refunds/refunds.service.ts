// Refunds: what a refund is to the payments module, its create flow as an idempotent operation, the read.
// A charge's amount_refunded counts refunds that succeeded, those in flight, and those whose outcome is
// not known yet, so the refunded total can never pass the charge: each new refund reserves its amount
// under the charge's row lock, and only a refund the processor answered "failed" gives it back.
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
  refundIntent,
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
    // At once when the charge plainly has the amount left: the refund and the amount held on its charge.
    intent: (key, params) => refundIntent(newId('re'), key, params),
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
