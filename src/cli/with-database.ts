// Runs one command-line task against the configured database (the embedded one when DATABASE_URL is unset).
import type pg from 'pg';
import { type Config, ConfigError, loadConfig } from '../config.ts';
import { createDb, createPool, type Db, migrateToLatest } from '../db/database.ts';
import { EmbeddedPostgresError, startEmbeddedPostgres } from '../db/embedded.ts';
import { createLogger } from '../logger.ts';

export async function withDatabase(
  task: (db: Db, context: { pool: pg.Pool; config: Config }) => Promise<void>,
): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const logger = createLogger(config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL);
  const embedded = config.DATABASE_URL
    ? undefined
    : await startEmbeddedPostgres({ dir: config.EMBEDDED_PG_DIR, port: config.EMBEDDED_PG_PORT }).catch((err) => {
        if (!(err instanceof EmbeddedPostgresError)) throw err;
        process.stderr.write(`${err.message}\n`);
        process.exit(1);
      });
  const pool = createPool(config.DATABASE_URL ?? embedded!.url, config, logger);
  const db = createDb(pool);
  try {
    if (config.MIGRATE_ON_START) await migrateToLatest(db);
    await task(db, { pool, config });
  } finally {
    await db.destroy();
    await embedded?.stop();
  }
}
