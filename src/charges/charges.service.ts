// Charges: the create flow as an idempotent operation, and the reads.
import type { Db } from '../db/database.ts';
import { NotFoundError, ProblemError, ValidationError } from '../errors.ts';
import { parseWith } from '../http/validation.ts';
import type { IdempotentOperation, StoredResponse } from '../idempotency/idempotency.service.ts';
import { newId } from '../ids.ts';
import type { ProcessorClient, ProcessorOutcome } from '../processor/processor.client.ts';
import { currentRequestId } from '../request-context.ts';
import {
  type ChargeRow,
  type ChargeSettlement,
  findCharge,
  findChargeByKeyId,
  insertPendingCharge,
  listCharges,
  lockChargeByKeyId,
  settleCharge,
} from './charges.repository.ts';
import { type CreateChargeParams, createChargeSchema } from './charges.schemas.ts';

export function presentCharge(charge: ChargeRow) {
  return {
    id: charge.id,
    object: 'charge' as const,
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

const chargeLocation = (charge: ChargeRow) => `/v1/charges/${charge.id}`;

/** What the processor's answer means for a pending charge; undefined while it has no answer. */
export function settlementOf(outcome: ProcessorOutcome): ChargeSettlement | undefined {
  switch (outcome.kind) {
    case 'approved':
      return { status: 'succeeded', processor_reference: outcome.reference };
    case 'declined':
      return {
        status: 'failed',
        processor_reference: outcome.reference,
        failure_code: outcome.code,
        failure_message: outcome.message,
      };
    case 'unavailable':
      return undefined;
  }
}

/** The answer a charge's current state deserves: 201 succeeded, 402 declined, 202 pending. */
export function chargeResponse(charge: ChargeRow): StoredResponse {
  const body = presentCharge(charge);
  const location = chargeLocation(charge);
  if (charge.status === 'succeeded') {
    return { status: 201, body, headers: { 'content-type': 'application/json', location } };
  }
  if (charge.status === 'pending') {
    return { status: 202, body, headers: { 'content-type': 'application/json', location } };
  }
  const declined = new ProblemError(402, charge.failure_code!, 'Card declined', charge.failure_message!, {
    extra: { charge: body },
  });
  return {
    status: 402,
    body: declined.toBody(currentRequestId()),
    headers: { 'content-type': 'application/problem+json', location },
  };
}

export function createChargeOperation(deps: { db: Db; processor: ProcessorClient }): IdempotentOperation<CreateChargeParams> {
  return {
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
      return deps.processor.charge(
        { amount: charge.amount, currency: charge.currency, source: charge.source, description: charge.description },
        charge.processor_idempotency_key,
        deadline,
      );
    },

    async recordOutcome(trx, key, outcome) {
      const charge = await lockChargeByKeyId(trx, key.id);
      if (!charge) throw new Error(`no charge for idempotency key ${key.id}`);
      const settlement = settlementOf(outcome);
      return chargeResponse(settlement ? await settleCharge(trx, charge.id, settlement) : charge);
    },
  };
}

export async function getCharge(db: Db, accountId: string, id: string) {
  const charge = await findCharge(db, accountId, id);
  if (!charge) throw new NotFoundError(`No charge ${id}.`);
  return presentCharge(charge);
}

export async function listChargesPage(db: Db, accountId: string, limit: number, startingAfter?: string) {
  let after: ChargeRow | undefined;
  if (startingAfter) {
    after = await findCharge(db, accountId, startingAfter);
    if (!after) throw new ValidationError([{ path: 'starting_after', message: `no charge ${startingAfter}` }]);
  }
  const rows = await listCharges(db, accountId, limit + 1, after);
  return {
    object: 'list' as const,
    data: rows.slice(0, limit).map(presentCharge),
    has_more: rows.length > limit,
  };
}
