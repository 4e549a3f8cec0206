// Charges: what a charge is to the payments module, its create flow as an idempotent operation, the reads.
import type { Db } from '../db/database.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { newId } from '../ids.ts';
import type { Payments, PaymentType } from '../payments/payments.service.ts';
import { objectId, parseWith } from '../validation.ts';
import { type ChargeRow, chargeIntent, findCharge, listCharges } from './charges.repository.ts';
import { type Charge, type CreateChargeParams, createChargeSchema } from './charges.schemas.ts';

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

export const chargePayments: PaymentType<ChargeRow> = {
  kind: 'charge',
  table: 'charges',
  processorRequest: async (_db, charge) => ({
    amount: charge.amount,
    currency: charge.currency,
    source: charge.source,
    description: charge.description,
  }),
  present: presentCharge,
  failedTitle: 'Card declined',
};

export function createChargeOperation(deps: { payments: Payments }) {
  return deps.payments.operation<CreateChargeParams, ChargeRow>(chargePayments, {
    path: '/v1/charges',
    parse: (body) => parseWith(createChargeSchema, body),
    intent: (key, params) => chargeIntent(newId('ch'), key, params),
  });
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
