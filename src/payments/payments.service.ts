// The life of a payment, charges and refunds alike: ask the processor, record its answer, and never call
// a payment failed that the processor may have made. The only code that talks to the processor about a
// payment: the request path, the completer, the settle job and the reconcile job all come through here.
//
//   send (same processor key every time) ──answer──▶ final: succeeded | failed (declined)
//        │ no answer
//        ▼
//   pending + settle job ──asks again──▶ final
//        │ settle window over (or attempts spent)
//        ▼
//   look up by key ──found──▶ final as found
//        │ never seen                     │ processor unreachable
//        ▼                                ▼
//   void the key ──▶ failed         pending, flagged, reconcile job asks slowly until it can
import { followedBy } from '../db/ctes.ts';
import { type Db, type DbOrTrx, inTransaction } from '../db/database.ts';
import { type JobQueue, RECONCILE_QUEUE, SETTLE_QUEUE } from '../db/job-queue.ts';
import type { JsonObject } from '../db/schema.ts';
import { ProblemError } from '../errors.ts';
import type { Events } from '../events/events.service.ts';
import type { EventType } from '../events/events.schemas.ts';
import type { Changes, KeyRow } from '../idempotency/idempotency.repository.ts';
import type { Idempotency, StoredResponse } from '../idempotency/idempotency.service.ts';
import type { Logger } from '../logger.ts';
import type {
  ChargeRequest,
  LookupOutcome,
  PaymentKind,
  ProcessorClient,
  ProcessorOutcome,
  RefundRequest,
} from '../processor/processor.client.ts';
import { currentRequestId } from '../request-context.ts';
import {
  type Final,
  findDriverlessPayments,
  finishPayment,
  findPaymentState,
  finishPaymentChange,
  flagForReconciliation,
  lockPayment,
  paymentFromJson,
  type PaymentAges,
  type PaymentRow,
  type PaymentState,
  type PaymentTable,
} from './payments.repository.ts';

export type { PaymentKind };

/** The failure code of a payment the processor confirmed it never made, after we stopped waiting for it. */
export const PROCESSOR_UNAVAILABLE = 'processor_unavailable';

/** What differs between a charge and a refund; charges/ and refunds/ each supply one. */
export interface PaymentType<Row extends PaymentRow = PaymentRow> {
  kind: PaymentKind;
  table: PaymentTable;
  /** The request that asks the processor to make this payment. */
  processorRequest(db: DbOrTrx, row: Row): Promise<ChargeRequest | RefundRequest>;
  /**
   * Inside the transaction that records the payment failed: what failing gives back, if anything, and the
   * events of the other objects that changed (recorded in the same transaction).
   */
  afterFailed?(trx: DbOrTrx, row: Row): Promise<AlsoChanged[]>;
  present(row: Row): JsonObject;
  /** Title of the 402 problem a failed payment answers with. */
  failedTitle: string;
}

/** Another object a payment's change changed, as its event says. */
export interface AlsoChanged {
  accountId: string;
  type: EventType;
  object: JsonObject;
}

/** What phase 2 of a request learned: the processor's answer (none when the payment was final already) about the payment. */
export interface Attempt<Row extends PaymentRow = PaymentRow> {
  answer: ProcessorOutcome | undefined;
  payment: Row;
}

export type SettleResult = 'settled' | 'already_final' | 'retry' | 'awaiting_reconciliation';

/** A settle job's and a reconcile job's work on one kind of payment (see `jobsFor`). */
export interface PaymentJobs {
  settle(id: string, options: { lastAttempt: boolean; deadline: number }): Promise<SettleResult>;
  reconcile(id: string, deadline: number): Promise<SettleResult>;
}

/**
 * The answer a payment deserves by its status: 201 succeeded, 202 pending (follow Location), 402 failed
 * as problem+json carrying the payment.
 */
export function paymentResponse<Row extends PaymentRow>(type: PaymentType<Row>, row: Row): StoredResponse {
  const body = type.present(row);
  const headers = { 'Content-Type': 'application/json', Location: `/v1/${type.kind}s/${row.id}` };
  if (row.status === 'succeeded') return { status: 201, body, headers };
  if (row.status === 'pending') return { status: 202, body, headers };
  const failed = new ProblemError(402, row.failure_code!, type.failedTitle, row.failure_message!, {
    extra: { [type.kind]: body },
  });
  return {
    status: 402,
    body: failed.toBody(currentRequestId()),
    headers: { ...headers, 'Content-Type': 'application/problem+json' },
  };
}

function finalOf(kind: PaymentKind, outcome: Exclude<ProcessorOutcome, { kind: 'unavailable' }>): Final {
  switch (outcome.kind) {
    case 'approved':
      return { status: 'succeeded', processor_reference: outcome.reference, failure_code: null, failure_message: null };
    case 'declined':
      return {
        status: 'failed',
        processor_reference: outcome.reference,
        failure_code: outcome.code,
        failure_message: outcome.message,
      };
    case 'voided':
      return {
        status: 'failed',
        processor_reference: null,
        failure_code: PROCESSOR_UNAVAILABLE,
        failure_message: `The processor could not be reached in time, and it confirmed it holds no ${kind} for this request and never will: nothing was ${kind === 'charge' ? 'charged' : 'refunded'}.`,
      };
  }
}

export function createPayments(deps: {
  db: Db;
  processor: ProcessorClient;
  queue: JobQueue;
  events: Events;
  idempotency: Idempotency;
  logger: Logger;
  settings: PaymentAges;
}) {
  const { db, processor, queue, events, idempotency, logger, settings } = deps;

  /** A payment this run created a moment ago, with what its age means, as findPaymentState would say. */
  const justCreated = <Row extends PaymentRow>(row: Row): PaymentState<Row> => ({
    ...row,
    past_retention: settings.keyRetentionSeconds - settings.lookUpMarginSeconds <= 0,
    window_over: settings.settleWindowSeconds <= 0,
  });

  /**
   * Asks the processor what to record for a pending payment. Inside the settle window it sends the
   * request (with the payment's own key, so a repeat is the same request), looking first when the
   * processor may have forgotten the key. Past the window it only asks: look up, and void a key never seen.
   */
  async function ask<Row extends PaymentRow>(
    type: PaymentType<Row>,
    payment: PaymentState<Row>,
    deadline: number,
  ): Promise<ProcessorOutcome> {
    const key = payment.processor_idempotency_key;
    if (payment.window_over) return lookUpOrVoid(type.kind, key, deadline);
    if (payment.past_retention) {
      const found = await processor.lookUp(type.kind, key, deadline);
      if (found.kind !== 'unknown') return found;
    }
    const sent = await processor.send(type.kind, await type.processorRequest(db, payment), key, deadline);
    if (sent.kind !== 'rejected') return sent;
    // Refused this time, which says nothing of an earlier request with the key (one whose answer was
    // lost, say): the payment fails only once the processor confirms it holds none and burns the key.
    const settled = await lookUpOrVoid(type.kind, key, deadline);
    return settled.kind === 'voided' ? { kind: 'declined', reference: null, code: sent.code, message: sent.message } : settled;
  }

  async function lookUpOrVoid(kind: PaymentKind, key: string, deadline: number): Promise<ProcessorOutcome> {
    const found: LookupOutcome = await processor.lookUp(kind, key, deadline);
    // Voiding is atomic at the processor: a request of ours still on its way is refused after it, or was
    // recorded before it and the void answers what it recorded.
    return found.kind === 'unknown' ? processor.voidKey(kind, key, deadline) : found;
  }

  /**
   * Inside a transaction: records a final answer on a pending payment. No answer, a payment already final,
   * or a processor reference another payment holds (an anomaly for a human, flagged for reconciliation)
   * leave it as it is. Returns the payment as it now is.
   */
  async function apply<Row extends PaymentRow>(
    trx: DbOrTrx,
    type: PaymentType<Row>,
    id: string,
    outcome: ProcessorOutcome | undefined,
  ): Promise<Row> {
    if (!outcome || outcome.kind === 'unavailable') return lockPayment<Row>(trx, type.table, id);
    const finished = await finishPayment<Row>(trx, type.table, id, finalOf(type.kind, outcome));
    if (finished) {
      if (finished.status === 'failed') {
        for (const also of (await type.afterFailed?.(trx, finished)) ?? []) await events.record(trx, also.accountId, also.type, also.object);
      }
      await events.record(trx, finished.account_id, `${type.kind}.${finished.status}`, type.present(finished));
      return finished;
    }
    const current = await lockPayment<Row>(trx, type.table, id);
    if (current.status === 'pending') {
      logger.error(
        { kind: type.kind, id, processor_reference: 'reference' in outcome ? outcome.reference : null },
        'anomaly: the processor answered with a reference another payment holds; left pending for reconciliation',
      );
      await awaitReconciliation(trx, type, id);
      return lockPayment<Row>(trx, type.table, id);
    }
    return current;
  }

  /** Inside a transaction: flags a pending payment and gives it a reconcile job, which asks slowly. */
  async function awaitReconciliation(trx: DbOrTrx, type: PaymentType, id: string): Promise<void> {
    await flagForReconciliation(trx, type.table, id);
    await queue.enqueue(trx, RECONCILE_QUEUE, { kind: type.kind, id });
  }

  /** Reconciles a payment already read as pending: look up, void a key never seen, or wait for the processor. */
  async function reconcilePending<Row extends PaymentRow>(
    type: PaymentType<Row>,
    payment: PaymentState<Row>,
    deadline: number,
  ): Promise<SettleResult> {
    const { id } = payment;
    const outcome = await lookUpOrVoid(type.kind, payment.processor_idempotency_key, deadline);
    const row = await inTransaction(db, async (trx) => {
      if (outcome.kind !== 'unavailable') return apply(trx, type, id, outcome);
      await awaitReconciliation(trx, type, id);
      return undefined;
    });
    if (!row) {
      logger.warn(
        { kind: type.kind, id, reason: outcome.kind === 'unavailable' ? outcome.reason : undefined },
        `${type.kind} ${id} awaits reconciliation: the processor cannot say what became of it`,
      );
    }
    return !row || row.status === 'pending' ? 'awaiting_reconciliation' : 'settled';
  }

  const payments = {
    /**
     * Phases 2 and 3 of a request that creates a payment (or of the completer finishing one), from the
     * recovery point `intent_recorded`: ask the processor (nothing to ask when the payment is final
     * already), then record its answer with its event and finish the key, in one statement or the careful
     * way (no answer: pending, with a settle job; a lost lease; a failed refund that gives its amount
     * back). `created`: the row phase 1 returned as JSON, when this run wrote it.
     */
    async askAndRecord<Row extends PaymentRow>(type: PaymentType<Row>, key: KeyRow, deadline: number, created?: unknown): Promise<StoredResponse> {
      const attempt = await payments.attempt(type, key.id, deadline, created == null ? undefined : paymentFromJson<Row>(created));
      return idempotency.finish(key, payments.finishAtOnce(type, attempt), (trx, current) => payments.record(trx, type, current.id, attempt.answer));
    },

    /**
     * Phase 2 of a request (or of the completer finishing one): asks the processor to make the payment
     * created in phase 1, the row phase 1 wrote when this run wrote it, else read again. No answer when
     * there is nothing to ask: the payment is final already.
     */
    async attempt<Row extends PaymentRow>(type: PaymentType<Row>, keyId: string, deadline: number, created?: Row): Promise<Attempt<Row>> {
      const payment = created ? justCreated(created) : await findPaymentState<Row>(db, type.table, { keyId }, settings);
      if (!payment) throw new Error(`no ${type.kind} for idempotency key ${keyId}`);
      const answer = payment.status === 'pending' ? await ask(type, payment, deadline) : undefined;
      return { answer, payment };
    },

    /**
     * Phase 3 in one statement, for a final answer that changes nothing but the payment: the change and
     * the answer the client gets. Anything else (no answer, a refund whose failure gives its amount back)
     * is recorded by `record`, in a transaction.
     */
    finishAtOnce<Row extends PaymentRow>(
      type: PaymentType<Row>,
      { answer, payment }: Attempt<Row>,
    ): { changes: Changes; response: StoredResponse } | undefined {
      if (!answer || answer.kind === 'unavailable' || payment.status !== 'pending') return undefined;
      const final = finalOf(type.kind, answer);
      if (final.status === 'failed' && type.afterFailed) return undefined;
      const row = { ...payment, ...final, reconcile_since: null };
      return {
        changes: followedBy(
          finishPaymentChange(type.table, payment.id, final),
          events.ctes(row.account_id, `${type.kind}.${final.status}`, type.present(row), 'change'),
        ),
        response: paymentResponse(type, row),
      };
    },

    /**
     * Phase 3 the careful way, inside the transaction that finishes the request: records the answer and
     * says what the client is told. Without an answer the payment stays pending and a settle job,
     * committed with the 202 or not at all, takes over.
     */
    async record<Row extends PaymentRow>(
      trx: DbOrTrx,
      type: PaymentType<Row>,
      keyId: string,
      outcome: ProcessorOutcome | undefined,
    ): Promise<StoredResponse> {
      const payment = await findPaymentState<Row>(trx, type.table, { keyId }, settings);
      if (!payment) throw new Error(`no ${type.kind} for idempotency key ${keyId}`);
      const row = await apply(trx, type, payment.id, outcome);
      if (row.status === 'pending') {
        // The client is told 202 pending: that is the payment's first state anyone outside hears of.
        if (!row.reconcile_since) await queue.enqueue(trx, SETTLE_QUEUE, { kind: type.kind, id: row.id });
        await events.record(trx, row.account_id, `${type.kind}.pending`, type.present(row));
      }
      return paymentResponse(type, row);
    },

    /**
     * A settle job's run: asks again within the window. When the window is over or the job's attempts are
     * spent, it stops sending and reconciles instead.
     */
    async settle<Row extends PaymentRow>(
      type: PaymentType<Row>,
      id: string,
      options: { lastAttempt: boolean; deadline: number },
    ): Promise<SettleResult> {
      const payment = await findPaymentState<Row>(db, type.table, { id }, settings);
      if (payment?.status !== 'pending') return 'already_final';
      if (payment.window_over) return reconcilePending(type, payment, options.deadline);
      const outcome = await ask(type, payment, options.deadline);
      if (outcome.kind === 'unavailable') {
        return options.lastAttempt ? reconcilePending(type, payment, options.deadline) : 'retry';
      }
      const row = await inTransaction(db, (trx) => apply(trx, type, id, outcome));
      return row.status === 'pending' ? 'awaiting_reconciliation' : 'settled';
    },

    /**
     * Finds out what became of a payment without making it: look up, void a key never seen. A processor
     * that cannot be asked leaves the payment pending, flagged, with a reconcile job that asks slowly.
     */
    async reconcile<Row extends PaymentRow>(type: PaymentType<Row>, id: string, deadline: number): Promise<SettleResult> {
      const payment = await findPaymentState<Row>(db, type.table, { id }, settings);
      return payment?.status === 'pending' ? reconcilePending(type, payment, deadline) : 'already_final';
    },

    /** The settle and reconcile jobs of one kind of payment. */
    jobsFor<Row extends PaymentRow>(type: PaymentType<Row>): PaymentJobs {
      return {
        settle: (id, options) => payments.settle(type, id, options),
        reconcile: (id, deadline) => payments.reconcile(type, id, deadline),
      };
    },

    /**
     * The sweep: nothing pending stays without a driver. Takes the dead letters (each counted once, by
     * whoever takes it) and gives every pending payment that has no live job a new one.
     */
    async sweep(options: { limit: number }) {
      const deadLetters = await queue.takeDeadLetters(options.limit);
      for (const job of deadLetters) {
        logger.error({ kind: job.kind, id: job.id, queue: job.queue }, `${job.queue} job dead-lettered; the sweep drives its ${job.kind} again`);
      }
      const driverless = await findDriverlessPayments(db, options);
      for (const payment of driverless) {
        await queue.enqueue(db, payment.reconcile ? RECONCILE_QUEUE : SETTLE_QUEUE, payment);
      }
      return { deadLetters, redriven: driverless };
    },
  };
  return payments;
}

export type Payments = ReturnType<typeof createPayments>;
