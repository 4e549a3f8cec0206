// Settling a pending charge or refund from a job: ask the processor again with the same idempotency key,
// record its answer, or after the last attempt give up and dead-letter, in one transaction.
import type { Db, DbOrTrx } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { ProcessorOutcome } from '../processor/processor.client.ts';
import type { JobQueue, SettleJob } from './queue.ts';

export type Answer = Exclude<ProcessorOutcome, { kind: 'unavailable' }>;

/** What one kind of row (charge, refund) needs to be settled. */
export interface Settler {
  /** Makes the row ready to settle and says whether it is; false when it is final already. */
  prepare(id: string): Promise<boolean>;
  /** The processor call, with the row's own processor idempotency key. */
  call(id: string, deadline: number): Promise<ProcessorOutcome>;
  /** Inside a transaction: records the processor's answer. */
  apply(trx: DbOrTrx, id: string, answer: Answer): Promise<void>;
  /** Inside a transaction: marks the row failed because the processor stayed unavailable. */
  giveUp(trx: DbOrTrx, id: string): Promise<void>;
}

export type SettleResult = 'settled' | 'already_final' | 'retry' | 'dead_lettered';

export async function settle(
  deps: { db: Db; queue: JobQueue; logger: Logger },
  settler: Settler,
  job: SettleJob,
  options: { lastAttempt: boolean; deadline: number },
): Promise<SettleResult> {
  if (!(await settler.prepare(job.id))) return 'already_final';
  const outcome = await settler.call(job.id, options.deadline);
  if (outcome.kind !== 'unavailable') {
    await deps.db.transaction().execute((trx) => settler.apply(trx, job.id, outcome));
    return 'settled';
  }
  if (!options.lastAttempt) return 'retry';
  const reason = `processor unavailable (${outcome.reason}): ${outcome.detail}`;
  await deps.db.transaction().execute(async (trx) => {
    await settler.giveUp(trx, job.id);
    await deps.queue.deadLetterSettle(trx, { ...job, reason });
  });
  deps.logger.error({ job, reason }, `settle job dead-lettered: ${job.kind} ${job.id} failed with processor_unavailable`);
  return 'dead_lettered';
}
