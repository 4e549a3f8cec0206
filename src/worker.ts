// Builds the background face of the service: settle and reconcile jobs, the sweep, the completer, the
// reaper. No ports, no signals (main.ts owns those). Any number of workers can run: jobs are fetched with
// SKIP LOCKED, abandoned requests are taken under their lease, expired keys are deleted under SKIP LOCKED,
// and each payment has at most one live job per queue.
import type { JobWithMetadata, PgBoss } from 'pg-boss';
import type { Config } from './config.ts';
import type { Db } from './db/database.ts';
import { configureQueues, type PaymentJob, RECONCILE_QUEUE, SETTLE_QUEUE, WEBHOOK_QUEUE } from './db/job-queue.ts';
import { databaseTrouble } from './errors.ts';
import { OUTCOME_RESERVE_MS } from './idempotency/idempotency.service.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { OutageLog } from './outage-log.ts';
import type { SettleResult } from './payments/payments.service.ts';
import { withDeadline } from './request-context.ts';
import type { Services } from './services.ts';

export interface WorkerDeps {
  config: Config;
  db: Db;
  boss: PgBoss;
  services: Services;
  logger: Logger;
  metrics?: Metrics;
  outage: OutageLog;
  /** Called when a job that had to wait for the processor got its answer: the processor is back. */
  processorRecovered?: () => void;
}

// Abandoned requests finished per completer pass; the rest wait for the next pass.
const COMPLETER_BATCH = 100;
// The reaper stops after this many batches per pass, so one pass stays short.
const REAPER_MAX_BATCHES = 50;
// Dead letters taken and driverless payments re-driven per sweep pass.
const SWEEP_BATCH = 100;
// While the database is down, a periodic task waits longer after each failed pass, up to this (or its
// own interval, when longer): an outage costs little, and recovery is noticed within seconds.
const MAX_BACKOFF_MS = 5_000;
// Longest a fetch loop holds a job while the processor circuit is open (well inside the job's expiry).
const OPEN_CIRCUIT_HOLD_MS = 5_000;

export function createWorker(deps: WorkerDeps) {
  const { config, boss, services, logger, metrics, outage } = deps;
  const { payments, paymentJobs } = services;
  let stopped = false;

  /**
   * While the processor circuit turns calls away (open, or half-open with its one probe already out) a job
   * would only be turned away, spend an attempt, and go back to wait out a longer backoff: during an outage
   * every fetch loop would churn through the backlog, load the database and this process for nothing. So
   * a loop holds its job until a call can go through (half-open: this job may be the probe) or
   * OPEN_CIRCUIT_HOLD_MS passes; the job's deadline starts after.
   */
  async function circuitLetsThrough(): Promise<void> {
    const until = Date.now() + OPEN_CIRCUIT_HOLD_MS;
    while (!stopped && !services.processor.canCall() && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /**
   * A failure of background work: nothing more when it is the outage already logged, one short line when
   * the database was only too slow for the work's deadline, the error with its stack when it is a bug.
   */
  function failed(err: unknown, where: string, fields: Record<string, unknown>, message: string): void {
    if (outage.report(err, where)) return;
    const e = err as Error & { code?: string };
    if (databaseTrouble(err)) logger.warn({ ...fields, code: e.code, reason: e.message }, message);
    else logger.error({ err, ...fields }, message);
  }

  const passes = periodicPasses({
    failed: (err, name) => failed(err, name, {}, `${name} pass failed`),
    succeeded: () => outage.recovered(),
  });
  const every = passes.every;

  /**
   * Every job's run: `work` under the job's own deadline. An error is logged as `failed` says and thrown,
   * which hands the job back to pg-boss to run again after its queue's delay.
   */
  async function runGuarded<T>(queue: string, jobId: string, fields: Record<string, unknown>, timeoutMs: number, work: () => Promise<T>): Promise<T> {
    try {
      const result = await withDeadline(`job_${jobId}`, timeoutMs, work);
      outage.recovered();
      return result;
    } catch (err) {
      failed(err, `${queue} job`, { job_id: jobId, ...fields }, `${queue} job failed unexpectedly; pg-boss will retry it`);
      throw err;
    }
  }

  /** A settle or reconcile job's run; a result that asks for a retry hands the job back to pg-boss too. */
  async function runPaymentJob(
    queue: string,
    job: JobWithMetadata<PaymentJob>,
    work: (deadline: number) => Promise<SettleResult>,
  ): Promise<void> {
    const { kind, id } = job.data;
    await circuitLetsThrough();
    const result = await runGuarded(queue, job.id, { kind, id }, config.REQUEST_TIMEOUT_MS, () =>
      work(Date.now() + config.REQUEST_TIMEOUT_MS - OUTCOME_RESERVE_MS),
    ).catch((err: unknown) => {
      metrics?.settleOutcomes.inc({ queue, kind, result: 'error' });
      throw err;
    });
    metrics?.settleOutcomes.inc({ queue, kind, result });
    logger.info({ job_id: job.id, kind, id, attempt: job.retryCount + 1, result }, `${queue} job: ${result}`);
    // A settle job that waited for the processor and now settled: the others waiting need not wait out their backoff.
    if (result === 'settled' && job.retryCount > 0) deps.processorRecovered?.();
    // Throwing hands the job back to pg-boss, which runs it again after its queue's delay.
    if (result === 'retry' || (result === 'awaiting_reconciliation' && queue === RECONCILE_QUEUE)) {
      throw new Error(`${kind} ${id} stays pending: the processor could not be asked`);
    }
  }

  // One job per fetch, several fetch loops: a slow processor call holds up one loop, not the backlog.
  // While jobs are ready (an outage's backlog, once the processor is back), a loop fetches the next job as
  // soon as it is done instead of waiting out the polling interval, which would cap the drain at
  // JOB_CONCURRENCY jobs per JOB_POLL_INTERVAL_SECONDS.
  const work = {
    includeMetadata: true,
    batchSize: 1,
    localConcurrency: config.JOB_CONCURRENCY,
    pollingIntervalSeconds: config.JOB_POLL_INTERVAL_SECONDS,
    burstWhenReadyExceeds: 1,
  } as const;

  return {
    async start(): Promise<void> {
      await configureQueues(boss, config);
      await boss.work<PaymentJob>(SETTLE_QUEUE, work, async ([job]) => {
        const j = job as JobWithMetadata<PaymentJob>;
        await runPaymentJob(SETTLE_QUEUE, j, (deadline) =>
          paymentJobs[j.data.kind].settle(j.data.id, { lastAttempt: j.retryCount >= j.retryLimit, deadline }),
        );
      });
      await boss.work<PaymentJob>(RECONCILE_QUEUE, work, async ([job]) => {
        const j = job as JobWithMetadata<PaymentJob>;
        await runPaymentJob(RECONCILE_QUEUE, j, (deadline) => paymentJobs[j.data.kind].reconcile(j.data.id, deadline));
      });
      await boss.work<{ delivery: string; attempt?: number }>(WEBHOOK_QUEUE, work, async ([job]) => {
        const { delivery, attempt } = job!.data;
        await runGuarded(WEBHOOK_QUEUE, job!.id, { delivery }, config.WEBHOOK_TIMEOUT_MS + config.REQUEST_TIMEOUT_MS, () =>
          services.webhooks.deliver(delivery, attempt),
        );
      });
      every(config.SWEEP_INTERVAL_SECONDS, 'webhook sweep', async () => {
        const deliveries = await services.webhooks.redrive(SWEEP_BATCH);
        if (deliveries) logger.warn({ deliveries }, 'sweep gave pending webhook deliveries without a job a new one');
      });
      every(config.SWEEP_INTERVAL_SECONDS, 'sweep', async () => {
        const { deadLetters, redriven } = await payments.sweep({ limit: SWEEP_BATCH });
        for (const dead of deadLetters) metrics?.deadLetters.inc({ kind: dead.kind });
        for (const payment of redriven) metrics?.redriven.inc({ kind: payment.kind });
        if (redriven.length) {
          logger.warn({ payments: redriven.map((p) => `${p.kind} ${p.id}`) }, 'sweep gave pending payments without a job a new one');
        }
      });
      every(config.COMPLETER_INTERVAL_SECONDS, 'completer', () =>
        services.idempotency.completeAbandoned(services.resumables, {
          limit: COMPLETER_BATCH,
          timeoutMs: config.REQUEST_TIMEOUT_MS,
        }),
      );
      every(config.REAPER_INTERVAL_SECONDS, 'reaper', async () => {
        const { reaped, batches } = await services.idempotency.reapExpired({
          batchSize: config.REAPER_BATCH_SIZE,
          maxBatches: REAPER_MAX_BATCHES,
        });
        if (reaped) logger.info({ reaped, batches }, 'reaper deleted expired idempotency keys');
        const events = await services.events.removeExpired({ batchSize: config.REAPER_BATCH_SIZE, maxBatches: REAPER_MAX_BATCHES });
        if (events) logger.info({ events }, 'reaper deleted events past their retention');
      });
      logger.info('worker started: settle, reconcile and webhook jobs, sweep, completer, reaper');
    },

    async stop(): Promise<void> {
      stopped = true;
      const passesEnded = passes.stop();
      await boss.offWork(SETTLE_QUEUE, { wait: true });
      await boss.offWork(RECONCILE_QUEUE, { wait: true });
      await boss.offWork(WEBHOOK_QUEUE, { wait: true });
      await passesEnded;
    },
  };
}

export type Worker = ReturnType<typeof createWorker>;

/**
 * Passes that run every so many seconds, never two of one at once. While the database is down a pass that
 * failed waits longer before the next (doubling, up to MAX_BACKOFF_MS or its own interval) instead of
 * failing at every tick. stop() ends the timers and waits for the passes in flight.
 */
function periodicPasses(report: { failed(err: unknown, name: string): void; succeeded(): void }) {
  const timers: NodeJS.Timeout[] = [];
  const running = new Set<Promise<unknown>>();
  let stopped = false;
  return {
    every(seconds: number, name: string, task: () => Promise<unknown>): void {
      let busy = false;
      let backoffMs = 0;
      let notBefore = 0;
      const timer = setInterval(() => {
        if (busy || stopped || Date.now() < notBefore) return;
        busy = true;
        const pass = task()
          .then(
            () => {
              backoffMs = 0;
              report.succeeded();
            },
            (err) => {
              report.failed(err, name);
              backoffMs = Math.max(seconds * 1000, Math.min(MAX_BACKOFF_MS, backoffMs * 2));
              notBefore = Date.now() + backoffMs;
            },
          )
          .finally(() => {
            busy = false;
            running.delete(pass);
          });
        running.add(pass);
      }, seconds * 1000);
      timers.push(timer);
    },
    async stop(): Promise<void> {
      stopped = true;
      for (const timer of timers) clearInterval(timer);
      await Promise.allSettled([...running]);
    },
  };
}
