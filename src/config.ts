// The only module that reads the environment. Everything else receives the frozen Config.
import { z } from 'zod';

const int = (fallback: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(fallback);
const flag = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0'])
    .default(fallback ? 'true' : 'false')
    .transform((v) => v === 'true' || v === '1');

export const configSchema = z.object({
  PORT: int(3000, 0, 65535).describe('HTTP port of the api (0 picks a free one).'),
  HOST: z
    .string()
    .min(1)
    .default('127.0.0.1')
    .describe('Interface the api listens on (0.0.0.0 in containers).'),
  LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('pino log level.'),
  DATABASE_URL: z
    .url({ protocol: /^postgres(ql)?$/ })
    .optional()
    .describe('Postgres connection string. Unset: an embedded Postgres is started under EMBEDDED_PG_DIR.'),
  EMBEDDED_PG_DIR: z
    .string()
    .min(1)
    .default('.data/postgres')
    .describe('Data directory of the embedded Postgres.'),
  EMBEDDED_PG_PORT: int(54329, 1, 65535).describe('Port of the embedded Postgres.'),
  DB_POOL_MAX: int(20, 1, 1000).describe(
    'Most connections the pool opens; callers past it wait (20: measured in docs/SCALING.md).',
  ),
  DB_CONNECTION_TIMEOUT_MS: int(2000, 100, 60000).describe('How long to wait for a pool connection.'),
  DB_STATEMENT_TIMEOUT_MS: int(3000, 100, 600000).describe(
    'Postgres statement_timeout of a statement sent outside a transaction (never above REQUEST_TIMEOUT_MS); a transaction ends by its deadline.',
  ),
  DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: int(10000, 100, 600000).describe(
    'Postgres idle_in_transaction_session_timeout: a stuck transaction releases its locks.',
  ),
  REQUEST_TIMEOUT_MS: int(5000, 100, 120000).describe(
    'Deadline of one request; every call inside fits in it.',
  ),
  READINESS_TIMEOUT_MS: int(1000, 50, 30000).describe('How long /readyz waits for the database.'),
  MAX_IN_FLIGHT_REQUESTS: int(200, 1, 100000).describe(
    'Requests served at once before new ones get 503 overloaded.',
  ),
  SHUTDOWN_DRAIN_MS: int(0, 0, 600000).describe(
    'After SIGTERM, how long /readyz answers 503 before the listener closes (a few seconds behind a load balancer).',
  ),
  SHUTDOWN_GRACE_MS: int(10000, 0, 600000).describe('How long in-flight requests may finish after SIGTERM.'),
  PROCESSOR_URL: z
    .url()
    .default('http://127.0.0.1:4010')
    .describe('Base URL of the card processor; in the all role, unset means the simulator that process runs.'),
  WORKER_METRICS_PORT: int(9464, 0, 65535).describe('Port of the worker role\'s /livez and /metrics (0 picks a free one).'),
  PROCESSOR_PORT: int(4010, 0, 65535).describe('Port of the processor simulator when this process runs it.'),
  PROCESSOR_ATTEMPT_TIMEOUT_MS: int(1500, 50, 60000).describe('Timeout of one processor call attempt.'),
  PROCESSOR_MAX_ATTEMPTS: int(3, 1, 10).describe('Attempts per processor call, the first included.'),
  PROCESSOR_RETRY_BASE_MS: int(100, 1, 60000).describe('Base of the exponential backoff between attempts.'),
  PROCESSOR_KEY_RETENTION_SECONDS: int(86400, 1, 31536000).describe(
    'How long the processor remembers an idempotency key (Stripe: 24 h). Past it, a payment is looked up before any resend.',
  ),
  PROCESSOR_MAX_CONCURRENCY: z.coerce
    .number()
    .int()
    .min(1)
    .max(10000)
    .optional()
    .describe(
      'Bulkhead: most processor calls in flight at once; past it a payment answers 202 pending at once. Unset: a quarter of MAX_IN_FLIGHT_REQUESTS (50), so calls to a hanging processor never hold every request slot.',
    ),
  PROCESSOR_BREAKER_ENABLED: flag(true).describe(
    'Put processor calls behind the circuit breaker; false only to measure what it costs (bench, lab).',
  ),
  BREAKER_ERROR_THRESHOLD_PERCENT: int(50, 1, 100).describe(
    'Failure share in the window that opens the circuit.',
  ),
  BREAKER_VOLUME_THRESHOLD: int(10, 1, 100000).describe('Calls in the window before the circuit may open.'),
  BREAKER_ROLLING_WINDOW_MS: int(10000, 100, 600000).describe('Length of the breaker statistics window.'),
  BREAKER_RESET_TIMEOUT_MS: int(10000, 100, 600000).describe(
    'Time open before one half-open probe; kept >= the rolling window.',
  ),
  RATE_LIMIT_REQUESTS: int(100, 0, 1000000).describe(
    'Requests one API key may send per window, counted in Postgres for every api copy; 0 turns the limit off.',
  ),
  RATE_LIMIT_WINDOW_SECONDS: int(1, 1, 3600).describe('Length of a rate-limit window.'),
  IDEMPOTENCY_LEASE_SECONDS: z.coerce
    .number()
    .int()
    .min(1)
    .max(86400)
    .optional()
    .describe(
      'How long a request holds its key before a retry or the completer may resume it. Unset: what a request can really take, its deadline plus 2 s (7 s with the default REQUEST_TIMEOUT_MS), so a key whose process or database connection died is free within seconds. Every api and worker must use the same lease: set the same REQUEST_TIMEOUT_MS (or this) everywhere.',
    ),
  IDEMPOTENCY_KEY_TTL_SECONDS: int(86400, 60, 2592000).describe('How long a key is kept (24 h).'),
  WORKER_ENABLED: flag(true).describe('Run the job worker in the all and worker roles.'),
  MIGRATE_ON_START: flag(true).describe(
    'Apply pending migrations at start. Set false where `npm run migrate` is a deploy step of its own.',
  ),
  SETTLE_MAX_ATTEMPTS: int(300, 1, 100000).describe(
    'Settle attempts before a pending payment is reconciled (looked up, voided if never seen); by default the window ends first.',
  ),
  SETTLE_RETRY_DELAY_SECONDS: int(2, 1, 86400).describe(
    'First delay between settle attempts (doubles, jittered).',
  ),
  SETTLE_RETRY_DELAY_MAX_SECONDS: int(300, 1, 86400).describe('Longest delay between settle attempts.'),
  SETTLE_WINDOW_SECONDS: int(86400, 1, 2592000).describe(
    'How long a pending payment may still be sent to the processor; after it, it is only looked up (and voided if never seen).',
  ),
  RECONCILE_INTERVAL_SECONDS: int(300, 1, 86400).describe(
    'How often a payment the processor could not be asked about is asked again.',
  ),
  SWEEP_INTERVAL_SECONDS: int(60, 1, 86400).describe(
    'How often the sweep counts dead letters and re-drives pending payments that lost their job.',
  ),
  COMPLETER_INTERVAL_SECONDS: int(5, 1, 3600).describe(
    'How often the completer looks for abandoned requests.',
  ),
  REAPER_INTERVAL_SECONDS: int(60, 1, 86400).describe('How often the reaper deletes expired keys.'),
  REAPER_BATCH_SIZE: int(1000, 1, 100000).describe('Keys deleted per reaper statement.'),
  JOB_CONCURRENCY: int(5, 1, 100).describe(
    'Settle (and, apart, reconcile) jobs one worker process runs at once; after an outage the backlog drains this many at a time.',
  ),
  EVENT_RETENTION_SECONDS: int(30 * 86400, 60, 365 * 86400).describe(
    'How long events (and the record of their webhook deliveries) are kept; the reaper removes older ones in batches.',
  ),
  WEBHOOK_SECRET_KEY: z
    .string()
    .min(16)
    .optional()
    .describe(
      'Encrypts webhook signing secrets at rest (AES-256-GCM under its SHA-256). Unset: a development key, with a warning; set it in production, the same in every api and worker.',
    ),
  WEBHOOK_ALLOW_PRIVATE_URLS: flag(false).describe(
    'Let webhook endpoints point at loopback, private and link-local addresses (tests, local development).',
  ),
  WEBHOOK_TIMEOUT_MS: int(5000, 100, 60000).describe('Timeout of one webhook delivery attempt, connection included.'),
  WEBHOOK_RETRY_DELAY_MS: int(5000, 1, 86400000).describe(
    'Base of the exponential backoff between delivery attempts (full jitter: each wait is random up to the doubled base).',
  ),
  WEBHOOK_RETRY_DELAY_MAX_MS: int(3600000, 1, 86400000).describe('Longest wait between delivery attempts.'),
  WEBHOOK_RETRY_WINDOW_SECONDS: int(3 * 86400, 1, 30 * 86400).describe(
    'How long a delivery is retried before it is dead-lettered; an endpoint that failed for the whole window is disabled.',
  ),
  JOB_POLL_INTERVAL_SECONDS: z.coerce
    .number()
    .min(0.5)
    .max(60)
    .default(1)
    .describe('How often workers poll.'),
});

type Derived = 'PROCESSOR_MAX_CONCURRENCY' | 'IDEMPOTENCY_LEASE_SECONDS';
export type Config = Readonly<Omit<z.infer<typeof configSchema>, Derived> & Record<Derived, number>>;

// A request's work ends by its deadline; its last statement, sent just before, ends on the server within
// a fraction of a second after (the read timeout, then client_connection_check_interval). The margin
// covers that and a database clock a little ahead of ours.
const LEASE_MARGIN_SECONDS = 2;

export class ConfigError extends Error {}

/** Parses the environment once; throws a ConfigError naming every bad variable on one line. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const known = Object.fromEntries(
    Object.keys(configSchema.shape).flatMap((k) =>
      env[k] === undefined || env[k] === '' ? [] : [[k, env[k]]],
    ),
  );
  const parsed = configSchema.safeParse(known);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  if (parsed.data.BREAKER_RESET_TIMEOUT_MS < parsed.data.BREAKER_ROLLING_WINDOW_MS) {
    throw new ConfigError(
      'invalid configuration: BREAKER_RESET_TIMEOUT_MS: must be >= BREAKER_ROLLING_WINDOW_MS (opossum keeps old failures across a close)',
    );
  }
  const {
    PROCESSOR_MAX_CONCURRENCY = Math.max(1, Math.floor(parsed.data.MAX_IN_FLIGHT_REQUESTS / 4)),
    IDEMPOTENCY_LEASE_SECONDS = Math.ceil(parsed.data.REQUEST_TIMEOUT_MS / 1000) + LEASE_MARGIN_SECONDS,
  } = parsed.data;
  return Object.freeze({ ...parsed.data, PROCESSOR_MAX_CONCURRENCY, IDEMPOTENCY_LEASE_SECONDS });
}
