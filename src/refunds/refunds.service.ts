// Refunds: what a refund is to the payments module, the story of its creation in order, the read.
// A charge's amount_refunded counts refunds that succeeded, those in flight, and those whose outcome is
// not known yet, so the refunded total can never pass the charge: each new refund reserves its amount
// under the charge's row lock, and only a refund the processor answered "failed" gives it back.
import type { Db } from '../db/database.ts';
import { NotFoundError, ProblemError } from '../errors.ts';
import { newId } from '../ids.ts';
import type {
  ClaimSpec,
  Idempotency,
  IdempotentRequest,
  IdempotentResult,
  Resumable,
} from '../idempotency/idempotency.service.ts';
import type { Payments, PaymentType } from '../payments/payments.service.ts';
import { presentCharge } from '../charges/charges.service.ts';
import type { Events } from '../events/events.service.ts';
import { objectId, parseWith } from '../validation.ts';
import {
  changeAmountHeld,
  chargeReferenceOf,
  findRefund,
  lockChargeForRefund,
  refundIntents,
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
  // The processor said no: the amount was never paid out, so the charge may be refunded by it again. That
  // changes the charge a client sees: `charge.updated`, with the charge as it now is.
  afterFailed: async (trx, refund) => {
    await lockChargeForRefund(trx, refund.account_id, refund.charge_id);
    const charge = await changeAmountHeld(trx, refund.charge_id, -refund.amount);
    return [{ accountId: charge.account_id, type: 'charge.updated', object: presentCharge(charge) }];
  },
  present: presentRefund,
  failedTitle: 'Refund failed',
};

const notRefundable = (detail: string) =>
  new ProblemError(409, 'charge_not_refundable', 'Charge not refundable', detail);

/**
 * POST /v1/refunds, in order: parse, claim the key with the refund's intent (its amount held on its
 * charge), ask the processor, record its answer with its event, answer. As a charge's (see
 * createChargeStory), with one rule more: a refund the charge may not have is refused under its row lock.
 */
export function createRefundStory(deps: { idempotency: Idempotency; payments: Payments; events: Events }) {
  const { idempotency, payments, events } = deps;
  // A refund's intent holds its amount on its charge, and writes `charge.refunded` with the charge as it
  // now is, in the same statement (or the same transaction, the careful way).
  const refundIntent = refundIntents(events.sourced('held', 'charge.refunded'));
  const claimWith: ClaimSpec<CreateRefundParams> = {
    method: 'POST',
    path: '/v1/refunds',
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
  };

  return {
    async createRefund(request: IdempotentRequest, deadline: number): Promise<IdempotentResult> {
      const params = parseWith(createRefundSchema, request.body);
      // Phase 1: the key with its lease, and the refund with its amount held on its charge, at once when
      // the charge plainly has the amount left; else the careful way, where it may be refused.
      const begun = await idempotency.begin(claimWith, request, params, refundIntent(newId('re'), request.accountId, params, events.newEventId()));
      if (begun.kind === 'done') return begun.result;
      // Phases 2 and 3: ask the processor, record its answer with its event (see payments.askAndRecord).
      return idempotency.run(begun, () => payments.askAndRecord(refundPayments, begun.key, deadline, begun.intent));
    },
    /** For the completer: a request abandoned after phase 1, driven to its end as a retry would. */
    resumable: {
      method: claimWith.method,
      path: claimWith.path,
      resume: (key, deadline) => idempotency.drive(key, () => payments.askAndRecord(refundPayments, key, deadline)),
    } satisfies Resumable,
  };
}

export async function getRefund(db: Db, accountId: string, id: string) {
  const refund = objectId('re').safeParse(id).success ? await findRefund(db, accountId, id) : undefined;
  if (!refund) throw new NotFoundError(`No refund ${id}.`);
  return presentRefund(refund);
}
