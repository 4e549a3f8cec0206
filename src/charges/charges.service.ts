// Charges: what a charge is to the payments module, the story of its creation in order, the reads.
import type { Db } from '../db/database.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { newId } from '../ids.ts';
import type {
  ClaimSpec,
  Idempotency,
  IdempotentRequest,
  IdempotentResult,
  Resumable,
} from '../idempotency/idempotency.service.ts';
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

/**
 * POST /v1/charges, in order: parse, claim the key with the charge's intent, ask the processor, record its
 * answer with its event, answer. Each phase is one statement on the way everything goes as expected, and
 * moves the key's recovery point forward, so a request that dies anywhere is resumed from there, by a
 * retry with the same key or by the completer (`resume`).
 */
export function createChargeStory(deps: { idempotency: Idempotency; payments: Payments }) {
  const { idempotency, payments } = deps;
  const claimWith: ClaimSpec<CreateChargeParams> = {
    method: 'POST',
    path: '/v1/charges',
  };

  return {
    async createCharge(request: IdempotentRequest, deadline: number): Promise<IdempotentResult> {
      const params = parseWith(createChargeSchema, request.body);
      // Phase 1, one statement: the key with its lease, and the charge, pending, with a processor key
      // derived from the key's. A replay, a key in use or reused ends here.
      const begun = await idempotency.begin(claimWith, request, params, chargeIntent(newId('ch'), params));
      if (begun.kind === 'done') return begun.result;
      // Phases 2 and 3: ask the processor, record its answer with its event (see payments.askAndRecord).
      return idempotency.run(begun, () => payments.askAndRecord(chargePayments, begun.key, deadline, begun.intent));
    },
    /** For the completer: a request abandoned after phase 1, driven to its end as a retry would. */
    resumable: {
      method: claimWith.method,
      path: claimWith.path,
      resume: (key, deadline) => idempotency.drive(key, () => payments.askAndRecord(chargePayments, key, deadline)),
    } satisfies Resumable,
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
