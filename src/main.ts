// Composition root: reads config, builds every dependency, owns ports, signals and shutdown.
// `tsx src/main.ts [all|api]`; `all` (npm start) is the first-try mode with everything in one process.
import type { Server } from 'node:http';
import { countAccounts } from './accounts/accounts.repository.ts';
import { createAccount } from './accounts/accounts.service.ts';
import { createApp } from './app.ts';
import { type Config, ConfigError, loadConfig } from './config.ts';
import { createDb, createPool, migrateToLatest } from './db/database.ts';
import { startEmbeddedPostgres } from './db/embedded.ts';
import { createReadiness } from './health/health.service.ts';
import { createLogger, type Logger } from './logger.ts';
import { createProcessorClient } from './processor/processor.client.ts';
import { createServices } from './services.ts';
import { startSimulator } from './simulator/simulator.ts';

type Role = 'all' | 'api';
const ROLES: Role[] = ['all', 'api'];

type Closer = () => Promise<unknown>;

async function main(role: Role, config: Config, logger: Logger): Promise<void> {
  const closers: Closer[] = [];
  let shuttingDown = false;

  let databaseUrl = config.DATABASE_URL;
  if (!databaseUrl) {
    const embedded = await startEmbeddedPostgres({
      dir: config.EMBEDDED_PG_DIR,
      port: config.EMBEDDED_PG_PORT,
    });
    closers.push(() => embedded.stop());
    databaseUrl = embedded.url;
    logger.info({ dir: config.EMBEDDED_PG_DIR, port: config.EMBEDDED_PG_PORT }, 'embedded postgres running');
  }

  const pool = createPool(databaseUrl, config, logger);
  const db = createDb(pool);
  closers.unshift(() => db.destroy());
  const applied = await migrateToLatest(db);
  if (applied.length) logger.info({ migrations: applied }, 'migrations applied');

  const readiness = createReadiness({
    db,
    timeoutMs: config.READINESS_TIMEOUT_MS,
    isShuttingDown: () => shuttingDown,
  });
  if (role === 'all') {
    // First-try mode: the processor simulator runs in this process too.
    const simulator = await startSimulator(config.PROCESSOR_PORT);
    closers.push(() => simulator.close());
    logger.info({ url: simulator.url }, 'processor simulator listening');
  }
  const processor = createProcessorClient(config, logger);
  closers.unshift(async () => processor.shutdown());
  const services = createServices({ config, db, logger, processor });

  const app = createApp({ config, db, logger, readiness, services });
  const server: Server = await new Promise((resolve) => {
    const s = app.listen(config.PORT, config.HOST, () => resolve(s));
  });
  // Sockets idle past this are closed; a request still has its own deadline inside.
  server.headersTimeout = 10_000;
  server.requestTimeout = config.REQUEST_TIMEOUT_MS + 5_000;
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.PORT;
  const baseUrl = `http://${config.HOST}:${port}`;
  logger.info({ role, url: baseUrl }, 'api listening');

  if (role === 'all' && (await countAccounts(db)) === 0) {
    const { account, apiKey } = await createAccount(db, 'Demo account');
    process.stdout.write(
      [
        '',
        `Demo account ${account.id} created. Its test API key (shown once; only its hash is stored):`,
        `  ${apiKey}`,
        'Try it:',
        `  curl -s ${baseUrl}/v1/account -H "Authorization: Bearer ${apiKey}"`,
        '',
      ].join('\n'),
    );
  }

  const shutdown = async (signal: string) => {
    if (shuttingDown) return;
    shuttingDown = true;
    logger.info({ signal }, 'shutting down: readiness fails, in-flight requests finish');
    const grace = setTimeout(() => server.closeAllConnections(), config.SHUTDOWN_GRACE_MS);
    await new Promise((resolve) => server.close(resolve));
    clearTimeout(grace);
    for (const close of closers) {
      await close().catch((err) => logger.warn({ err }, 'error while closing'));
    }
    logger.info('stopped');
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
}

const role = (process.argv[2] ?? 'all') as Role;
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
  logger.fatal({ err }, 'failed to start');
  process.exit(1);
});
