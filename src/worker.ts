// Builds the background face of the service: settle jobs, the completer, the reaper. No ports, no
// signals (main.ts owns those). Any number of workers can run: jobs are fetched with SKIP LOCKED,
// abandoned requests are taken under their lease, expired keys are deleted under SKIP LOCKED.
import type { JobWithMetadata, PgBoss } from 'pg-boss';
import type { Config } from './config.ts';
import type { Db } from './db/database.ts';
import { configureQueues, SETTLE_QUEUE, type SettleJob } from './jobs/queue.ts';
import { settle } from './jobs/settle.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { Services } from './services.ts';

export interface WorkerDeps {
  config: Config;
  db: Db;
  boss: PgBoss;
  services: Services;
  logger: Logger;
  metrics?: Metrics;
}

// Abandoned requests finished per completer pass; the rest wait for the next pass.
const COMPLETER_BATCH = 100;
// The reaper stops after this many batches per pass, so one pass stays short.
const REAPER_MAX_BATCHES = 50;

export function createWorker(deps: WorkerDeps) {
  const { config, db, boss, services, logger, metrics } = deps;
  const timers: NodeJS.Timeout[] = [];
  const running = new Set<Promise<unknown>>();
  let stopped = false;

  async function settleJob(job: JobWithMetadata<SettleJob>): Promise<void> {
    const windowOver = Date.now() - job.createdOn.getTime() >= config.SETTLE_WINDOW_SECONDS * 1000;
    const lastAttempt = job.retryCount >= job.retryLimit || windowOver;
    const result = await settle({ db, queue: services.queue, logger }, services.settlers[job.data.kind], job.data, {
      lastAttempt,
      deadline: Date.now() + config.REQUEST_TIMEOUT_MS,
    }).catch((err) => {
      logger.error({ err, job_id: job.id, ...job.data }, 'settle job failed unexpectedly; pg-boss will retry it');
      throw err;
    });
    metrics?.settleOutcomes.inc({ kind: job.data.kind, result });
    if (result === 'dead_lettered') metrics?.deadLetters.inc({ kind: job.data.kind });
    logger.info({ job_id: job.id, ...job.data, attempt: job.retryCount + 1, result }, `settle job ${result}`);
    // Throwing hands the job back to pg-boss, which runs it again after a jittered, growing delay.
    if (result === 'retry') throw new Error(`processor unavailable; ${job.data.kind} ${job.data.id} stays pending`);
  }

  /** Runs `task` every `seconds`, never two passes at once, and lets stop() wait for the one in flight. */
  function every(seconds: number, name: string, task: () => Promise<unknown>) {
    let busy = false;
    const timer = setInterval(() => {
      if (busy || stopped) return;
      busy = true;
      const pass = task()
        .catch((err) => logger.warn({ err }, `${name} pass failed`))
        .finally(() => {
          busy = false;
          running.delete(pass);
        });
      running.add(pass);
    }, seconds * 1000);
    timers.push(timer);
  }

  return {
    async start(): Promise<void> {
      await configureQueues(boss, config);
      await boss.work<SettleJob>(
        SETTLE_QUEUE,
        { includeMetadata: true, batchSize: 1, pollingIntervalSeconds: config.JOB_POLL_INTERVAL_SECONDS },
        async ([job]) => settleJob(job as JobWithMetadata<SettleJob>),
      );
      every(config.COMPLETER_INTERVAL_SECONDS, 'completer', () =>
        services.idempotency.completeAbandoned(services.operations, {
          limit: COMPLETER_BATCH,
          deadline: () => Date.now() + config.REQUEST_TIMEOUT_MS,
        }),
      );
      every(config.REAPER_INTERVAL_SECONDS, 'reaper', async () => {
        const { reaped, batches } = await services.idempotency.reapExpired({
          batchSize: config.REAPER_BATCH_SIZE,
          maxBatches: REAPER_MAX_BATCHES,
        });
        if (reaped) logger.info({ reaped, batches }, 'reaper deleted expired idempotency keys');
      });
      logger.info('worker started: settle jobs, completer, reaper');
    },

    async stop(): Promise<void> {
      stopped = true;
      for (const timer of timers) clearInterval(timer);
      await boss.offWork(SETTLE_QUEUE, { wait: true });
      await Promise.allSettled([...running]);
    },
  };
}

export type Worker = ReturnType<typeof createWorker>;
