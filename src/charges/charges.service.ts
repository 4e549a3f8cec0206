// Charges: the create flow as an idempotent operation, and the reads.
import type { Db } from '../db/database.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { parseWith } from '../http/validation.ts';
import {
  type IdempotentOperation,
  paymentResponse,
  type StoredResponse,
} from '../idempotency/idempotency.service.ts';
import { newId } from '../ids.ts';
import type { ProcessorClient, ProcessorOutcome } from '../processor/processor.client.ts';
import { type Answer, GIVE_UP_MESSAGE, type Settler } from '../jobs/settle.ts';
import type { JobQueue } from '../jobs/queue.ts';
import {
  type ChargeRow,
  type ChargeSettlement,
  findCharge,
  findChargeById,
  findChargeByKeyId,
  insertPendingCharge,
  listCharges,
  lockChargeByKeyId,
  PROCESSOR_UNAVAILABLE,
  settleCharge,
} from './charges.repository.ts';
import { type Charge, type CreateChargeParams, createChargeSchema, objectId } from './charges.schemas.ts';

export function presentCharge(charge: ChargeRow): Charge {
  return {
    id: charge.id,
    object: 'charge',
    amount: charge.amount,
    currency: charge.currency,
    status: charge.status,
    amount_refunded: charge.amount_refunded,
    refunded: charge.amount_refunded === charge.amount,
    description: charge.description,
    metadata: charge.metadata,
    failure_code: charge.failure_code,
    failure_message: charge.failure_message,
    processor_reference: charge.processor_reference,
    created: charge.created_at.toISOString(),
  };
}

/** What the processor's answer means for a pending charge. */
function settlementOf(answer: Answer): ChargeSettlement {
  return answer.kind === 'approved'
    ? { status: 'succeeded', processor_reference: answer.reference, failure_code: null, failure_message: null }
    : {
        status: 'failed',
        processor_reference: answer.reference,
        failure_code: answer.code,
        failure_message: answer.message,
      };
}

function callProcessorFor(processor: ProcessorClient, charge: ChargeRow, deadline: number): Promise<ProcessorOutcome> {
  return processor.charge(
    { amount: charge.amount, currency: charge.currency, source: charge.source, description: charge.description },
    charge.processor_idempotency_key,
    deadline,
  );
}

/** The answer a charge's current state deserves: 201 succeeded, 402 declined, 202 pending. */
export const chargeResponse = (charge: ChargeRow): StoredResponse =>
  paymentResponse(charge, 'charge', presentCharge(charge), 'Card declined');

export interface ChargeDeps {
  db: Db;
  processor: ProcessorClient;
  queue: JobQueue;
}

export function createChargeOperation(deps: ChargeDeps): IdempotentOperation<CreateChargeParams> {
  return {
    method: 'POST',
    path: '/v1/charges',
    parse: (body) => parseWith(createChargeSchema, body),

    async recordIntent(trx, key, params) {
      await insertPendingCharge(trx, {
        id: newId('ch'),
        account_id: key.account_id,
        idempotency_key_id: key.id,
        amount: params.amount,
        currency: params.currency,
        source: params.source,
        description: params.description ?? null,
        metadata: params.metadata ?? {},
        // Derived from our key row, so every retry, resume and later settle reuses it.
        processor_idempotency_key: `charge_${key.id}`,
      });
    },

    async callProcessor(key, deadline) {
      const charge = await findChargeByKeyId(deps.db, key.id);
      if (!charge) throw new Error(`no charge for idempotency key ${key.id}`);
      return callProcessorFor(deps.processor, charge, deadline);
    },

    async recordOutcome(trx, key, outcome) {
      const charge = await lockChargeByKeyId(trx, key.id);
      if (!charge) throw new Error(`no charge for idempotency key ${key.id}`);
      if (outcome.kind !== 'unavailable') return chargeResponse(await settleCharge(trx, charge.id, settlementOf(outcome)));
      // No answer: the charge stays pending and a settle job takes over, committed with the 202 or not at all.
      await deps.queue.enqueueSettle(trx, { kind: 'charge', id: charge.id });
      return chargeResponse(charge);
    },
  };
}

export function createChargeSettler(deps: ChargeDeps): Settler {
  return {
    async askProcessor(id, deadline) {
      const charge = await findChargeById(deps.db, id);
      const unsettled =
        charge?.status === 'pending' || (charge?.status === 'failed' && charge.failure_code === PROCESSOR_UNAVAILABLE);
      return unsettled ? callProcessorFor(deps.processor, charge, deadline) : undefined;
    },
    async apply(trx, id, answer) {
      await settleCharge(trx, id, settlementOf(answer));
    },
    async giveUp(trx, id) {
      await settleCharge(trx, id, {
        status: 'failed',
        processor_reference: null,
        failure_code: PROCESSOR_UNAVAILABLE,
        failure_message: GIVE_UP_MESSAGE,
      });
    },
  };
}

export async function getCharge(db: Db, accountId: string, id: string) {
  const charge = objectId('ch').safeParse(id).success ? await findCharge(db, accountId, id) : undefined;
  if (!charge) throw new NotFoundError(`No charge ${id}.`);
  return presentCharge(charge);
}

export async function listChargesPage(db: Db, accountId: string, limit: number, startingAfter?: string) {
  if (startingAfter && !(await findCharge(db, accountId, startingAfter))) {
    throw new ValidationError([{ path: 'starting_after', message: `no charge ${startingAfter}` }]);
  }
  const rows = await listCharges(db, accountId, limit + 1, startingAfter);
  return {
    object: 'list' as const,
    data: rows.slice(0, limit).map(presentCharge),
    has_more: rows.length > limit,
  };
}
