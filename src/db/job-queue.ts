// The job queue (pg-boss, in our own Postgres). Sits low, beside the database code, so a service can
// enqueue inside its own transaction without knowing anything about the worker.
import { sql } from 'kysely';
import { fromKysely, PgBoss, type SendOptions } from 'pg-boss';
import type pg from 'pg';
import type { Config } from '../config.ts';
import type { DbOrTrx } from './database.ts';

export const JOB_SCHEMA = 'pgboss';
/** Asks the processor again about a pending payment, fast at first, until its settle window ends. */
export const SETTLE_QUEUE = 'settle';
/** Asks the processor, slowly and for as long as it takes, what became of a payment past its window. */
export const RECONCILE_QUEUE = 'reconcile';
/** Delivers one event to one webhook endpoint: one attempt per job, the next one made by the attempt. */
export const WEBHOOK_QUEUE = 'webhook';
/** Jobs that ran out of attempts on errors; the sweep counts each and drives its payment again. */
export const SETTLE_DEAD_QUEUE = 'settle-dead';

/** A wake-up for one pending charge or refund; the row itself stays the source of truth. */
export interface PaymentJob {
  kind: 'charge' | 'refund';
  id: string;
}

export type QueueSettings = Pick<
  Config,
  | 'SETTLE_MAX_ATTEMPTS'
  | 'SETTLE_RETRY_DELAY_SECONDS'
  | 'SETTLE_RETRY_DELAY_MAX_SECONDS'
  | 'SETTLE_WINDOW_SECONDS'
  | 'RECONCILE_INTERVAL_SECONDS'
  | 'REQUEST_TIMEOUT_MS'
  | 'WEBHOOK_TIMEOUT_MS'
>;

// A job's work ends by its deadline (REQUEST_TIMEOUT_MS). One still active well after that was lost: its
// worker died, froze, or never received it, or its end was never recorded because the database went away
// at that moment. pg-boss's supervisor then hands it to another worker; until it does, the exclusive
// queue lets no new job drive the payment, so the wait is kept short.
const jobExpireSeconds = (settings: QueueSettings) => Math.max(10, Math.ceil((3 * settings.REQUEST_TIMEOUT_MS) / 1000));
// How often a worker's pg-boss looks for such jobs (its default is a minute).
const SUPERVISE_INTERVAL_SECONDS = 5;
const QUEUE_CACHE_INTERVAL_SECONDS = 2;
// Reconciliation never gives up on its own: a payment the processor may have made stays asked about.
const RECONCILE_ATTEMPTS = 1_000_000;
const DEAD_LETTER_RETENTION_SECONDS = 30 * 86400;

export function queueOptions(settings: QueueSettings) {
  return {
    [SETTLE_QUEUE]: {
      retryLimit: settings.SETTLE_MAX_ATTEMPTS - 1,
      retryDelay: settings.SETTLE_RETRY_DELAY_SECONDS,
      retryBackoff: true,
      retryDelayMax: settings.SETTLE_RETRY_DELAY_MAX_SECONDS,
      expireInSeconds: jobExpireSeconds(settings),
      retentionSeconds: settings.SETTLE_WINDOW_SECONDS + 86400,
      deadLetter: SETTLE_DEAD_QUEUE,
    },
    [RECONCILE_QUEUE]: {
      retryLimit: RECONCILE_ATTEMPTS,
      retryDelay: settings.RECONCILE_INTERVAL_SECONDS,
      retryBackoff: false,
      expireInSeconds: jobExpireSeconds(settings),
      retentionSeconds: DEAD_LETTER_RETENTION_SECONDS,
      deadLetter: SETTLE_DEAD_QUEUE,
    },
    // A delivery's own retries are made by its attempts (webhooks.service.ts); pg-boss retries a job only
    // when its run failed unexpectedly (the database went away), and one that runs out is redriven by the sweep.
    [WEBHOOK_QUEUE]: {
      retryLimit: 5,
      retryDelay: 5,
      retryBackoff: true,
      retryDelayMax: 300,
      expireInSeconds: Math.max(10, Math.ceil((3 * (settings.WEBHOOK_TIMEOUT_MS + settings.REQUEST_TIMEOUT_MS)) / 1000)),
      retentionSeconds: 86400,
    },
  };
}

/** A pg-boss instance over our own pool. It never migrates: the schema comes from migrations/. */
export function createBoss(pool: pg.Pool, options: { supervise: boolean }): PgBoss {
  return new PgBoss({
    db: { executeSql: (text: string, values?: unknown[]) => pool.query(text, values) },
    schema: JOB_SCHEMA,
    migrate: false,
    createSchema: false,
    supervise: options.supervise,
    superviseIntervalSeconds: SUPERVISE_INTERVAL_SECONDS,
    // The queue counts workers read to fetch without pausing while a backlog waits (burstWhenReadyExceeds
    // in worker.ts): refreshed every few seconds rather than every minute.
    monitorIntervalSeconds: SUPERVISE_INTERVAL_SECONDS,
    queueCacheIntervalSeconds: QUEUE_CACHE_INTERVAL_SECONDS,
    schedule: false,
  });
}

/** Brings the queues' retry settings in line with the configuration. */
export async function configureQueues(boss: PgBoss, settings: QueueSettings): Promise<void> {
  for (const [name, options] of Object.entries(queueOptions(settings))) await boss.updateQueue(name, options);
}

export interface JobQueue {
  /**
   * Enqueues inside `trx`: the job exists if and only if the transaction commits. At most one live job
   * per payment and queue (the queues are `exclusive`): a second one is simply not made.
   */
  enqueue(trx: DbOrTrx, queue: typeof SETTLE_QUEUE | typeof RECONCILE_QUEUE, job: PaymentJob): Promise<void>;
  /** Takes up to `limit` dead letters off their queue, each exactly once across every worker. */
  takeDeadLetters(limit: number): Promise<(PaymentJob & { queue: string })[]>;
}

export function createJobQueue(boss: PgBoss, settings: QueueSettings): JobQueue {
  const options = queueOptions(settings);
  return {
    async enqueue(trx, queue, job) {
      const send: SendOptions = { ...options[queue], singletonKey: `${job.kind}:${job.id}`, db: fromKysely(trx) };
      await boss.send(queue, job, send);
    },
    async takeDeadLetters(limit) {
      const jobs = await boss.fetch<PaymentJob>(SETTLE_DEAD_QUEUE, { batchSize: limit, includeMetadata: true });
      if (!jobs.length) return [];
      await boss.complete(
        SETTLE_DEAD_QUEUE,
        jobs.map((j) => j.id),
      );
      return jobs.map((j) => ({ ...j.data, queue: j.sourceName ?? 'unknown' }));
    },
  };
}

/** Jobs waiting per queue (ready or deferred for a retry), read in one statement. */
export async function queueDepths(db: DbOrTrx): Promise<{ backlog: number; dead: number }> {
  const { rows } = await sql<{ name: string; n: string }>`
    select name, count(*) as n from ${sql.table(`${JOB_SCHEMA}.job`)}
    where name in (${SETTLE_QUEUE}, ${RECONCILE_QUEUE}, ${SETTLE_DEAD_QUEUE}) and state < 'active'
    group by name`.execute(db);
  const count = (name: string) => Number(rows.find((r) => r.name === name)?.n ?? 0);
  return { backlog: count(SETTLE_QUEUE) + count(RECONCILE_QUEUE), dead: count(SETTLE_DEAD_QUEUE) };
}

/**
 * The processor is back: settle jobs waiting out a retry delay run now instead of at the end of their
 * backoff (up to SETTLE_RETRY_DELAY_MAX_SECONDS), so pending payments settle within seconds of recovery.
 * Only the wait is cut: their attempts and their exclusivity are pg-boss's as before. Returns how many.
 */
export async function wakeDeferredSettleJobs(db: DbOrTrx, options: { limit?: number } = {}): Promise<number> {
  const job = sql.table(`${JOB_SCHEMA}.job`);
  // `limit null` is no limit. The outer `name =` keeps the update on the settle queue's partition.
  const result = await sql`
    update ${job} set start_after = now()
    where name = ${SETTLE_QUEUE} and id in (
      select id from ${job} where name = ${SETTLE_QUEUE} and state = 'retry' and start_after > now()
      order by start_after limit ${options.limit ?? null})`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
