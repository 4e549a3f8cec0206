// Composition root of the process: reads config, owns the database, ports, signals and shutdown.
// `node src/main.ts all|api|worker`: `all` (npm start) runs api, worker and processor simulator in one process.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { countAccounts } from './accounts/accounts.repository.ts';
import { createAccount } from './accounts/accounts.service.ts';
import { compose } from './compose.ts';
import { type Config, ConfigError, loadConfig } from './config.ts';
import { createDb, createPool, DatabaseSetupError, migrateToLatest, waitForDatabase } from './db/database.ts';
import { EmbeddedPostgresError, startEmbeddedPostgres } from './db/embedded.ts';
import { opsListener, rawProblem, startingListener } from './http/ops.ts';
import { createLogger, type Logger } from './logger.ts';
import { listenFailure, SimulatorListenError, startSimulator } from './simulator/simulator.ts';

const ROLES = ['all', 'api', 'worker'] as const;
/** A signal came: the process is on its way out (see shutdown in main). */
let stopping = false;
type Role = (typeof ROLES)[number];

async function main(role: Role, config: Config, logger: Logger): Promise<void> {
  // Closed in reverse order of opening.
  const closers: (() => Promise<unknown>)[] = [];
  let shuttingDown = false;
  let server: Server | undefined;

  const shutdown = async (signal: string) => {
    if (shuttingDown) {
      // A second Ctrl-C (or a signal sent to the whole process group) is not a crash: the drain goes on.
      logger.info({ signal }, 'already shutting down');
      return;
    }
    shuttingDown = true;
    stopping = true;
    logger.info({ signal }, 'shutting down: readiness fails, in-flight requests finish');
    if (server && config.SHUTDOWN_DRAIN_MS > 0) {
      // Readiness already fails; keep serving while load balancers notice and stop sending.
      await new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DRAIN_MS));
    }
    if (server) {
      const s = server;
      const grace = setTimeout(() => s.closeAllConnections(), config.SHUTDOWN_GRACE_MS);
      await new Promise((resolve) => s.close(resolve));
      clearTimeout(grace);
    }
    for (const close of closers.reverse()) {
      await close().catch((err) => logger.warn({ err }, 'error while closing'));
    }
    logger.info('stopped');
    process.exit(0);
  };
  // From the very start: a signal while starting (migrations, listen) still closes what was opened, the
  // embedded Postgres last, instead of killing the process and leaving that server running.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => void shutdown(signal));

  let databaseUrl = config.DATABASE_URL;
  if (!databaseUrl) {
    const embedded = await startEmbeddedPostgres({ dir: config.EMBEDDED_PG_DIR, port: config.EMBEDDED_PG_PORT });
    // First opened, so closed last: the app drains before its database goes.
    closers.push(() => embedded.stop());
    databaseUrl = embedded.url;
    logger.info({ dir: config.EMBEDDED_PG_DIR, port: Number(new URL(embedded.url).port) }, 'embedded postgres running');
  }
  const pool = createPool(databaseUrl, config, logger);
  closers.push(() => pool.end());
  if (!config.WEBHOOK_SECRET_KEY) {
    logger.warn('WEBHOOK_SECRET_KEY is unset: webhook signing secrets are encrypted with the development key; set one in production');
  }

  // The listeners open first and say "alive, not ready" until the database takes writes, so an
  // orchestrator neither restarts a process that waits for its database nor sends it traffic.
  type Listener = (req: IncomingMessage, res: ServerResponse) => void;
  let api: Listener = startingListener();
  let ops: Listener = startingListener();
  if (role !== 'worker') {
    // HTTP/1.1 asks for a Host header, but nothing here routes by it: a request without one is served,
    // rather than refused by Node with a bare 400.
    const s = createServer({ requireHostHeader: false }, (req, res) => api(req, res));
    // A slow or silent client cannot hold a socket for long; each request also has its own deadline.
    s.headersTimeout = 10_000;
    s.requestTimeout = config.REQUEST_TIMEOUT_MS + 5_000;
    s.on('clientError', answerClientError);
    // An Expect this server does not meet (anything but 100-continue) still gets a problem+json answer.
    s.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
      const { head, body } = rawProblem(417, 'expectation_failed', 'Expectation failed', 'Only "Expect: 100-continue" is supported.');
      res.writeHead(417, head).end(body);
    });
    await listen(s, config.PORT, config.HOST, 'PORT');
    server = s;
  }
  let opsUrl: string | undefined;
  if (role === 'worker') {
    // The worker serves no API, only its operators: /livez, and /metrics for its jobs, dead letters and sweeps.
    const o = createServer({ requireHostHeader: false }, (req, res) => ops(req, res));
    await listen(o, config.WORKER_METRICS_PORT, config.HOST, 'WORKER_METRICS_PORT');
    closers.push(() => new Promise((resolve) => o.close(resolve)));
    opsUrl = urlOf(o, config.HOST, config.WORKER_METRICS_PORT);
  }
  await waitForDatabase(pool, logger, () => shuttingDown);
  if (shuttingDown) return;

  if (config.MIGRATE_ON_START) {
    const applied = await migrateToLatest(createDb(pool));
    if (applied.length) logger.info({ migrations: applied }, 'migrations applied');
  }

  let processorUrl = config.PROCESSOR_URL;
  if (role === 'all') {
    // First-try mode: the processor simulator runs in this process too, and it is the processor unless
    // PROCESSOR_URL names another one (so PROCESSOR_PORT alone moves both ends, 0 included).
    const simulator = await startSimulator(config.PROCESSOR_PORT).catch((err: unknown) => {
      throw err instanceof SimulatorListenError ? new StartupError(`${err.message} (set PROCESSOR_PORT to another port)`) : err;
    });
    closers.push(() => simulator.close());
    if (!process.env.PROCESSOR_URL) processorUrl = simulator.url;
    logger.info({ url: simulator.url }, 'processor simulator listening');
  }

  const service = await compose({
    config: { ...config, PROCESSOR_URL: processorUrl },
    pool,
    logger,
    supervise: role !== 'api',
    isShuttingDown: () => shuttingDown,
  });
  closers.push(() => service.close());

  if (role !== 'api' && config.WORKER_ENABLED) {
    const worker = service.worker();
    await worker.start();
    closers.push(() => worker.stop());
  }

  if (opsUrl) {
    ops = opsListener(service.metrics.registry);
    logger.info({ role, url: opsUrl }, 'worker metrics listening');
  }

  if (server) {
    api = service.app();
    const baseUrl = urlOf(server, config.HOST, config.PORT);
    logger.info({ role, url: baseUrl }, 'api listening');
    // A greeting that fails (the database went away just now) is no reason to stop a running service.
    if (role === 'all') await greetOnFirstStart(service.db, baseUrl).catch((err: Error) => logger.warn({ reason: err.message }, 'could not greet'));
  }
}

function urlOf(server: Server, host: string, port: number): string {
  const address = server.address();
  return `http://${host}:${typeof address === 'object' && address ? address.port : port}`;
}

/**
 * Requests Node's HTTP parser refuses before express sees them (malformed, headers too large, too slow)
 * still get a problem+json answer rather than bare text.
 */
/** A start that failed because of the environment (a port taken): one line says what to change. */
class StartupError extends Error {}

/** Listens on host:port, or fails with a StartupError that names the setting. */
function listen(server: Server, port: number, host: string, setting: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => {
      reject(new StartupError(`cannot listen on ${host}:${port}: ${listenFailure(err)} (set ${setting} to another port)`));
    };
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
}

function answerClientError(err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const [status, code, title] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'headers_too_large', 'Request headers too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'request_timeout', 'Request timeout']
        : [400, 'bad_request', 'Bad request'];
  const { head, body } = rawProblem(status, code, title, 'The HTTP request could not be read.');
  // A HEAD answer has no body: bytes after its headers would be read as the start of the next answer.
  const isHead = err.rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
  const lines = Object.entries({ ...head, Connection: 'close' }).map(([k, v]) => `${k}: ${v}\r\n`);
  socket.end(`HTTP/1.1 ${status} ${title}\r\n${lines.join('')}\r\n${isHead ? '' : body}`);
}

/** A problem+json answer written below express, with a request id of its own like every other answer. */

/** On the very first start, a demo account and its key, so a new user can paste a curl line. */
async function greetOnFirstStart(db: ReturnType<typeof createDb>, baseUrl: string): Promise<void> {
  if ((await countAccounts(db)) > 0) return;
  const { account, apiKey } = await createAccount(db, 'Demo account');
  process.stdout.write(
    [
      '',
      `Demo account ${account.id} created. Its test API key (shown once; only its hash is stored):`,
      `  ${apiKey}`,
      'Charge $10.00 (run it twice: the second answer is the stored one, Idempotent-Replayed: true):',
      `  curl -si ${baseUrl}/v1/charges -H "Authorization: Bearer ${apiKey}" -H "Idempotency-Key: order-1" \\`,
      `    -H "Content-Type: application/json" -d '{"amount": 1000, "currency": "usd", "source": "tok_visa"}'`,
      '',
    ].join('\n'),
  );
}

const USAGE = `usage: node src/main.ts [${ROLES.join('|')}] (default all); settings come from the environment (see README)\n`;
const role = (process.argv[2] ?? 'all') as Role;
if (role === ('--help' as Role)) {
  // Loads every module a process runs and exits: what a build runs to fill Node's compile cache.
  process.stdout.write(USAGE);
  process.exit(0);
}
if (!ROLES.includes(role)) {
  process.stderr.write(`unknown role "${role}"; expected one of ${ROLES.join(', ')}\n`);
  process.exit(2);
}
let config: Config;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
}
const logger = createLogger(config.LOG_LEVEL);
main(role, config, logger).catch((err) => {
  // A start cut short by a signal: the shutdown under way closes what was opened and exits.
  if (stopping) return;
  if (err instanceof StartupError || err instanceof EmbeddedPostgresError || err instanceof DatabaseSetupError) {
    process.stderr.write(`${err.message}\n`);
  } else {
    logger.fatal({ err }, 'failed to start');
  }
  process.exit(1);
});
