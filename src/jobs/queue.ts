// The job queue (pg-boss, in our own Postgres). Sits low, beside the database code, so a service can
// enqueue inside its own transaction without knowing anything about the worker.
import { fromKysely, PgBoss, type SendOptions } from 'pg-boss';
import type pg from 'pg';
import type { Config } from '../config.ts';
import type { DbOrTrx } from '../db/database.ts';

export const JOB_SCHEMA = 'pgboss';
export const SETTLE_QUEUE = 'settle';
export const SETTLE_DEAD_QUEUE = 'settle-dead';

/** A wake-up for one pending charge or refund; the row itself stays the source of truth. */
export interface SettleJob {
  kind: 'charge' | 'refund';
  id: string;
}

export interface DeadSettleJob extends SettleJob {
  reason: string;
}

export type QueueSettings = Pick<
  Config,
  'SETTLE_MAX_ATTEMPTS' | 'SETTLE_RETRY_DELAY_SECONDS' | 'SETTLE_RETRY_DELAY_MAX_SECONDS' | 'SETTLE_WINDOW_SECONDS'
>;

// A settle attempt makes one processor call bounded by the request timeout; a job still active after
// this long belonged to a worker that died, and pg-boss hands it to another.
const SETTLE_JOB_EXPIRE_SECONDS = 120;

export function settleQueueOptions(settings: QueueSettings) {
  return {
    retryLimit: settings.SETTLE_MAX_ATTEMPTS - 1,
    retryDelay: settings.SETTLE_RETRY_DELAY_SECONDS,
    retryBackoff: true,
    retryDelayMax: settings.SETTLE_RETRY_DELAY_MAX_SECONDS,
    expireInSeconds: SETTLE_JOB_EXPIRE_SECONDS,
    retentionSeconds: settings.SETTLE_WINDOW_SECONDS + 86400,
  };
}

/** A pg-boss instance over our own pool. It never migrates: the schema comes from migrations/. */
export function createBoss(pool: pg.Pool, options: { supervise: boolean }): PgBoss {
  const boss = new PgBoss({
    db: { executeSql: (text: string, values?: unknown[]) => pool.query(text, values) },
    schema: JOB_SCHEMA,
    migrate: false,
    createSchema: false,
    supervise: options.supervise,
    schedule: false,
  });
  return boss;
}

/** Brings the settle queue's retry settings in line with the configuration. */
export async function configureQueues(boss: PgBoss, settings: QueueSettings): Promise<void> {
  await boss.updateQueue(SETTLE_QUEUE, settleQueueOptions(settings));
}

export interface JobQueue {
  /** Enqueues inside `trx`: the job exists if and only if the transaction commits. */
  enqueueSettle(trx: DbOrTrx, job: SettleJob): Promise<void>;
  deadLetterSettle(trx: DbOrTrx, job: DeadSettleJob): Promise<void>;
}

export function createJobQueue(boss: PgBoss, settings: QueueSettings): JobQueue {
  const options: SendOptions = { ...settleQueueOptions(settings), deadLetter: SETTLE_DEAD_QUEUE };
  return {
    async enqueueSettle(trx, job) {
      await boss.send(SETTLE_QUEUE, job, { ...options, db: fromKysely(trx) });
    },
    async deadLetterSettle(trx, job) {
      await boss.send(SETTLE_DEAD_QUEUE, job, { db: fromKysely(trx) });
    },
  };
}
