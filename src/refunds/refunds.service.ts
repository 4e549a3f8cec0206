// Refunds: the create flow as an idempotent operation (the same machinery as charges), settling, reads.
// A charge's amount_refunded counts refunds that succeeded, those in flight, and those given up on with
// the outcome unknown, so the refunded total can never pass the charge: each new refund reserves its
// amount under the charge's row lock.
import { objectId } from '../charges/charges.schemas.ts';
import {
  addToAmountRefunded,
  findChargeById,
  lockCharge,
  PROCESSOR_UNAVAILABLE,
} from '../charges/charges.repository.ts';
import type { Db, DbOrTrx } from '../db/database.ts';
import { NotFoundError, ProblemError } from '../errors.ts';
import { parseWith } from '../http/validation.ts';
import {
  type IdempotentOperation,
  paymentResponse,
  type StoredResponse,
} from '../idempotency/idempotency.service.ts';
import { newId } from '../ids.ts';
import type { JobQueue } from '../jobs/queue.ts';
import { type Answer, GIVE_UP_MESSAGE, type Settler } from '../jobs/settle.ts';
import type { ProcessorClient, ProcessorOutcome } from '../processor/processor.client.ts';
import {
  findRefund,
  findRefundById,
  findRefundByKeyId,
  insertPendingRefund,
  lockRefundById,
  type RefundRow,
  updateRefund,
} from './refunds.repository.ts';
import { type CreateRefundParams, createRefundSchema, type Refund } from './refunds.schemas.ts';

export interface RefundDeps {
  db: Db;
  processor: ProcessorClient;
  queue: JobQueue;
}

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

const notRefundable = (detail: string) =>
  new ProblemError(409, 'charge_not_refundable', 'Charge not refundable', detail);

const refundResponse = (refund: RefundRow): StoredResponse =>
  paymentResponse(refund, 'refund', presentRefund(refund), 'Refund failed');

async function callProcessorFor(deps: RefundDeps, refund: RefundRow, deadline: number): Promise<ProcessorOutcome> {
  const charge = await findChargeById(deps.db, refund.charge_id);
  return deps.processor.refund(
    { charge: charge!.processor_reference!, amount: refund.amount },
    refund.processor_idempotency_key,
    deadline,
  );
}

/** Records a processor answer on a pending refund; a failed refund gives its amount back to the charge. */
async function applyAnswer(trx: DbOrTrx, id: string, answer: Answer): Promise<RefundRow> {
  const refund = (await lockRefundById(trx, id))!;
  if (refund.status !== 'pending') return refund;
  if (answer.kind === 'approved') {
    return updateRefund(trx, id, { status: 'succeeded', processor_reference: answer.reference });
  }
  await releaseAmount(trx, refund);
  return updateRefund(trx, id, {
    status: 'failed',
    processor_reference: answer.reference,
    failure_code: answer.code,
    failure_message: answer.message,
  });
}

async function releaseAmount(trx: DbOrTrx, refund: RefundRow): Promise<void> {
  await lockCharge(trx, refund.account_id, refund.charge_id);
  await addToAmountRefunded(trx, refund.charge_id, -refund.amount);
}

export function createRefundOperation(deps: RefundDeps): IdempotentOperation<CreateRefundParams> {
  return {
    method: 'POST',
    path: '/v1/refunds',
    parse: (body) => parseWith(createRefundSchema, body),

    async recordIntent(trx, key, params) {
      const charge = await lockCharge(trx, key.account_id, params.charge);
      if (!charge) throw new NotFoundError(`No charge ${params.charge}.`);
      if (charge.status !== 'succeeded') {
        throw notRefundable(`Charge ${charge.id} is ${charge.status}; only a succeeded charge can be refunded.`);
      }
      const left = charge.amount - charge.amount_refunded;
      if (left === 0) throw notRefundable(`Charge ${charge.id} is already fully refunded.`);
      const amount = params.amount ?? left;
      if (amount > left) {
        throw new ProblemError(
          409,
          'refund_exceeds_charge',
          'Refund exceeds charge',
          `Refund of ${amount} exceeds the ${left} left to refund on charge ${charge.id}.`,
        );
      }
      await insertPendingRefund(trx, {
        id: newId('re'),
        account_id: key.account_id,
        charge_id: charge.id,
        idempotency_key_id: key.id,
        amount,
        currency: charge.currency,
        reason: params.reason ?? null,
        processor_idempotency_key: `refund_${key.id}`,
      });
      await addToAmountRefunded(trx, charge.id, amount);
    },

    async callProcessor(key, deadline) {
      const refund = await findRefundByKeyId(deps.db, key.id);
      if (!refund) throw new Error(`no refund for idempotency key ${key.id}`);
      return callProcessorFor(deps, refund, deadline);
    },

    async recordOutcome(trx, key, outcome) {
      const refund = (await findRefundByKeyId(trx, key.id))!;
      if (outcome.kind !== 'unavailable') return refundResponse(await applyAnswer(trx, refund.id, outcome));
      await deps.queue.enqueueSettle(trx, { kind: 'refund', id: refund.id });
      return refundResponse(refund);
    },
  };
}

export function createRefundSettler(deps: RefundDeps): Settler {
  return {
    async askProcessor(id, deadline) {
      let refund = await findRefundById(deps.db, id);
      if (refund?.status === 'failed' && refund.failure_code === PROCESSOR_UNAVAILABLE) {
        // An operator redrove a refund we gave up on; it still holds its amount (see giveUp).
        refund = await updateRefund(deps.db, id, { status: 'pending' });
      }
      return refund?.status === 'pending' ? callProcessorFor(deps, refund, deadline) : undefined;
    },
    async apply(trx, id, answer) {
      await applyAnswer(trx, id, answer);
    },
    async giveUp(trx, id) {
      const refund = (await lockRefundById(trx, id))!;
      if (refund.status !== 'pending') return;
      // The processor may have paid it: the amount stays held, so the charge can never be refunded twice
      // over. Only a refund the processor answered "failed" gives its amount back.
      await updateRefund(trx, id, {
        status: 'failed',
        processor_reference: null,
        failure_code: PROCESSOR_UNAVAILABLE,
        failure_message: GIVE_UP_MESSAGE,
      });
    },
  };
}

export async function getRefund(db: Db, accountId: string, id: string) {
  const refund = objectId('re').safeParse(id).success ? await findRefund(db, accountId, id) : undefined;
  if (!refund) throw new NotFoundError(`No refund ${id}.`);
  return presentRefund(refund);
}
