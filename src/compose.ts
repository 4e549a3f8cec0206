// Builds every dependency of the service from its configuration and a pool. main.ts owns the process
// (ports, signals, shutdown); tests call this too, so they run what production runs.
import type pg from 'pg';
import { createApp } from './app.ts';
import type { Config } from './config.ts';
import { createDb, type Db, outageLogOf } from './db/database.ts';
import { createHealth, createReadiness } from './health/health.service.ts';
import { createBoss, createJobQueue, queueDepths, wakeDeferredSettleJobs } from './db/job-queue.ts';
import { pendingPaymentsSummary } from './payments/payments.repository.ts';
import { withDeadline } from './request-context.ts';
import type { Logger } from './logger.ts';
import { createMetrics } from './metrics.ts';
import { createProcessorClient } from './processor/processor.client.ts';
import { createServices } from './services.ts';
import { deliveryBacklog } from './webhooks/webhooks.repository.ts';
import { createWorker } from './worker.ts';

const RECOVERY_WAKE_MS = 1_000;

export async function compose(options: {
  config: Config;
  pool: pg.Pool;
  logger: Logger;
  /** Whether this process runs pg-boss's supervision (workers do; an api-only process need not). */
  supervise: boolean;
  isShuttingDown?: () => boolean;
}) {
  const { config, pool, logger } = options;
  const db = createDb(pool);
  const metrics = createMetrics();
  metrics.watchPool(pool);

  // One line when the database goes away and one when it is back, however many requests, loops, pool
  // connections and pg-boss timers run into it.
  const outage = outageLogOf(pool, logger);
  const boss = createBoss(pool, { supervise: options.supervise });
  boss.on('error', (err) => outage.report(err, 'job queue') || logger.error({ err }, 'job queue error'));
  await boss.start();
  const backlog = async () => {
    const webhooks = await deliveryBacklog(db);
    return { ...(await queueDepths(db)), ...(await pendingPaymentsSummary(db)), webhooksPending: webhooks.pending, webhooksFailed: webhooks.failed };
  };
  metrics.watchBacklog(backlog);
  const queue = createJobQueue(boss, config);

  const processor = createProcessorClient(config, logger, (operation, outcome, seconds) =>
    metrics.processorCalls.observe({ operation, outcome }, seconds),
  );
  processor.onBreakerStateChange((state) => metrics.setBreakerState(state));

  const settleWake = wakeSettleJobsWhenTheProcessorAnswers({ db, config, logger });
  processor.onBreakerStateChange((state) => {
    if (state !== 'open') settleWake.processorRecovered(state);
  });
  const processorRecovered = () => settleWake.processorRecovered('job_settled');

  const services = createServices({
    config,
    db,
    logger,
    processor,
    queue,
    observeDeliveries: {
      attempt: (outcome, seconds) => metrics.webhookAttempts.observe({ outcome }, seconds),
      deadLettered: () => metrics.webhookDeadLetters.inc(),
      endpointDisabled: () => metrics.webhookEndpointsDisabled.inc(),
    },
  });
  const readiness = createReadiness({
    db,
    logger,
    timeoutMs: config.READINESS_TIMEOUT_MS,
    isShuttingDown: options.isShuttingDown ?? (() => false),
  });

  const health = createHealth({
    db,
    logger,
    timeoutMs: config.READINESS_TIMEOUT_MS,
    breakerState: () => processor.breakerState(),
    backlog,
  });

  return {
    db,
    boss,
    metrics,
    processor,
    services,
    readiness,
    app: () => createApp({ config, db, logger, readiness, health, services, metrics }),
    worker: () => createWorker({ config, db, boss, services, logger, metrics, outage, processorRecovered }),
    /** Stops the queue client and the breaker's timers; the pool belongs to the caller. */
    async close() {
      settleWake.stop();
      processor.shutdown();
      await boss.stop({ graceful: false, close: false });
    },
  };
}

export type Composition = Awaited<ReturnType<typeof compose>>;

/**
 * The processor may answer again: the payments that went pending meanwhile need not wait out their settle
 * jobs' backoff (up to SETTLE_RETRY_DELAY_MAX_SECONDS). Deferred settle jobs run now when
 * - the circuit turns half-open: one of them only, which in a worker becomes the probe (all of them would
 *   each spend an attempt on a circuit that turns them away, every reset period of a long outage);
 * - the circuit closes (the probe got an answer): all of them;
 * - a settle job that had to wait got its answer (without a breaker, or before it opened): all of them.
 * At most once a second per process and reason (the close that follows a half-open probe by a few
 * milliseconds must still wake the jobs the probe's half-open state turned away); any copy may do it, it is
 * one UPDATE. A job the half-open circuit turned away just before the close is handed back to its backoff
 * only when its run ends, which may be after the close's wake: a second wake one job deadline later, when
 * every job in flight at the close has ended, brings those forward too.
 */
function wakeSettleJobsWhenTheProcessorAnswers(deps: { db: Db; config: Config; logger: Logger }) {
  const { db, config, logger } = deps;
  const lastWake = new Map<string, number>();
  let lateWake: NodeJS.Timeout | undefined;
  const wake = (reason: string, limit?: number) =>
    // Its own deadline: the event may come inside a request or a job whose deadline is nearly spent.
    withDeadline('settle_wake', config.REQUEST_TIMEOUT_MS, () => wakeDeferredSettleJobs(db, { limit })).then(
      (woken) => woken && logger.info({ woken, reason }, 'processor may answer again: deferred settle jobs run now'),
      (err: unknown) => logger.warn({ err }, 'could not bring deferred settle jobs forward; they run at the end of their backoff'),
    );
  return {
    processorRecovered(reason: 'half_open' | 'closed' | 'job_settled') {
      if (Date.now() - (lastWake.get(reason) ?? 0) < RECOVERY_WAKE_MS) return;
      lastWake.set(reason, Date.now());
      void wake(reason, reason === 'half_open' ? 1 : undefined);
      if (reason === 'closed') {
        clearTimeout(lateWake);
        lateWake = setTimeout(() => void wake('closed_late'), config.REQUEST_TIMEOUT_MS);
        lateWake.unref();
      }
    },
    stop: () => clearTimeout(lateWake),
  };
}
