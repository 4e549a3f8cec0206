// Prometheus metrics. One registry per composition, passed in; nothing registers in prom-client's global one.
import type pg from 'pg';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { BreakerState } from './processor/processor.client.ts';

/** The job queue and the pending payments, as a scrape and /health read them. */
export interface Backlog {
  backlog: number;
  dead: number;
  awaitingReconciliation: number;
  oldestPendingSeconds: number;
  /** Webhook deliveries waiting for an attempt, and those dead-lettered (kept with their event). */
  webhooksPending: number;
  webhooksFailed: number;
}

const BREAKER_STATE_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

// Node's own metrics (heap, GC, event-loop lag) describe the process, not one composition of the service:
// they are collected once per process and shared by every registry made here. Collected again for each,
// their event-loop timer and GC observer would keep running after the composition is gone (a test process
// makes dozens).
let processMetrics: Registry | undefined;
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics }); // includes event-loop lag and heap
    // Gauges whose names end in _total, which Prometheus keeps for counters (promtool's lint says so); the
    // same counts remain by type in nodejs_active_handles, nodejs_active_requests and nodejs_active_resources.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
      processMetrics.removeSingleMetric(name);
    }
  }
  return processMetrics;
}

export function createMetrics() {
  const registry = new Registry();
  const shared = processRegistry();
  for (const { name } of shared.getMetricsAsArray()) registry.registerMetric(shared.getSingleMetric(name)!);

  const metrics = {
    registry,
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by route and status.',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    idempotencyOutcomes: new Counter({
      name: 'idempotency_outcomes_total',
      help: 'Idempotent requests by outcome: new, replayed, in_use, reused, resumed.',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    paymentOutcomes: new Counter({
      name: 'payment_outcomes_total',
      help: 'Charges and refunds answered, by kind and HTTP status (201 succeeded, 402 declined, 202 pending).',
      labelNames: ['kind', 'status'] as const,
      registers: [registry],
    }),
    processorCalls: new Histogram({
      name: 'processor_call_duration_seconds',
      help: 'Processor calls (all attempts together) by operation and outcome.',
      labelNames: ['operation', 'outcome'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers: [registry],
    }),
    breakerState: new Gauge({
      name: 'processor_circuit_state',
      help: 'Processor circuit breaker state: 0 closed, 1 half-open, 2 open.',
      registers: [registry],
    }),
    settleOutcomes: new Counter({
      name: 'settle_jobs_total',
      help: 'Settle and reconcile job runs by queue, kind and result (settled, already_final, retry, awaiting_reconciliation, error).',
      labelNames: ['queue', 'kind', 'result'] as const,
      registers: [registry],
    }),
    deadLetters: new Counter({
      name: 'settle_dead_letters_total',
      help: 'Settle and reconcile jobs dead-lettered (their attempts spent on errors, or their worker lost), counted once by the sweep that takes them.',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    redriven: new Counter({
      name: 'sweep_redriven_total',
      help: 'Pending payments the sweep found without a live job and gave a new one.',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    loadShed: new Counter({
      name: 'http_requests_shed_total',
      help: 'Requests answered 503 overloaded without being served.',
      registers: [registry],
    }),
    inFlight: new Gauge({
      name: 'http_requests_in_flight',
      help: 'Requests under /v1 being served now (their slot held until their work ends); MAX_IN_FLIGHT_REQUESTS is the most.',
      registers: [registry],
    }),
    webhookAttempts: new Histogram({
      name: 'webhook_delivery_attempt_duration_seconds',
      help: 'Webhook delivery attempts by outcome (succeeded, http_error, timeout, network_error, address_refused, not_signed), from connection to answer.',
      labelNames: ['outcome'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    webhookDeadLetters: new Counter({
      name: 'webhook_deliveries_dead_lettered_total',
      help: 'Webhook deliveries that failed every attempt of their retry window (redeliverable by an operator).',
      registers: [registry],
    }),
    webhookEndpointsDisabled: new Counter({
      name: 'webhook_endpoints_disabled_total',
      help: 'Webhook endpoints disabled because they took no delivery for a whole retry window.',
      registers: [registry],
    }),
    setBreakerState(state: BreakerState) {
      metrics.breakerState.set(BREAKER_STATE_VALUE[state]);
    },
    /** Pool gauges, read when scraped. */
    watchPool(pool: pg.Pool) {
      const gauge = (name: string, help: string, read: () => number) =>
        new Gauge({
          name,
          help,
          registers: [registry],
          collect() {
            this.set(read());
          },
        });
      gauge('db_pool_connections', 'Connections open in the pool.', () => pool.totalCount);
      gauge('db_pool_connections_idle', 'Idle connections in the pool.', () => pool.idleCount);
      gauge('db_pool_waiting', 'Callers waiting for a pool connection.', () => pool.waitingCount);
    },
    /** Queue and reconciliation gauges, read once per scrape, whichever gauge prom-client collects first. */
    watchBacklog(read: () => Promise<Backlog>) {
      let last: Backlog = { backlog: 0, dead: 0, awaitingReconciliation: 0, oldestPendingSeconds: 0, webhooksPending: 0, webhooksFailed: 0 };
      let answered = 0;
      let reading: Promise<void> | undefined;
      // prom-client collects every gauge at once: they share one read in flight.
      const refresh = () =>
        (reading ??= read()
          .then((v) => {
            last = v;
            answered = 1;
          })
          .catch(() => {
            answered = 0; // the other gauges keep their last reading; this one says it is stale
          })
          .finally(() => {
            reading = undefined;
          }));
      const gauge = (name: string, help: string, pick: (v: Backlog) => number) =>
        new Gauge({
          name,
          help,
          registers: [registry],
          async collect() {
            await refresh();
            this.set(pick(last));
          },
        });
      gauge('database_answered', 'Whether the database answered the read behind these gauges at this scrape (1) or not (0).', () => answered);
      gauge('payments_oldest_pending_age_seconds', 'Age of the oldest pending charge or refund (0 when none is pending).', (v) => v.oldestPendingSeconds);
      gauge('settle_queue_backlog', 'Settle and reconcile jobs waiting (ready or deferred for retry).', (v) => v.backlog);
      gauge('settle_dead_letter_queue_size', 'Dead-lettered jobs the sweep has not taken yet.', (v) => v.dead);
      gauge(
        'payments_awaiting_reconciliation',
        'Pending charges and refunds past their settle window that the processor could not be asked about yet.',
        (v) => v.awaitingReconciliation,
      );
      gauge('webhook_deliveries_pending', 'Webhook deliveries waiting for their next attempt (the delivery backlog).', (v) => v.webhooksPending);
      gauge('webhook_deliveries_failed', 'Webhook deliveries dead-lettered and not redelivered, kept with their event.', (v) => v.webhooksFailed);
    },
  };
  metrics.breakerState.set(0);
  return metrics;
}

export type Metrics = ReturnType<typeof createMetrics>;
