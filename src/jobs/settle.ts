// Settling a pending charge or refund from a job: ask the processor again with the same idempotency key,
// record its answer, or after the last attempt give up and dead-letter, in one transaction.
import type { Db, DbOrTrx } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { ProcessorOutcome } from '../processor/processor.client.ts';
import type { JobQueue, SettleJob } from './queue.ts';

export type Answer = Exclude<ProcessorOutcome, { kind: 'unavailable' }>;

export const GIVE_UP_MESSAGE = 'The processor could not be reached within the settle window.';

/** What one kind of row (charge, refund) needs to be settled. */
export interface Settler {
  /** Asks the processor again, with the row's own idempotency key; undefined when the row is final already. */
  askProcessor(id: string, deadline: number): Promise<ProcessorOutcome | undefined>;
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
  const outcome = await settler.askProcessor(job.id, options.deadline);
  if (!outcome) return 'already_final';
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
