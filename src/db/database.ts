// The database handle: Kysely over a bounded pg pool whose every query has a timeout.
import { Kysely, PostgresDialect, type Transaction } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import type { Logger } from 'pino';
import { migrations } from '../../migrations/index.ts';
import type { Config } from '../config.ts';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations run on a handle that knows no table types
type AnyDb = Kysely<any>;
export type DbOrTrx = Kysely<Database> | Transaction<Database>;

export type PoolSettings = Pick<
  Config,
  'DB_POOL_MAX' | 'DB_CONNECTION_TIMEOUT_MS' | 'DB_STATEMENT_TIMEOUT_MS' | 'DB_IDLE_IN_TRANSACTION_TIMEOUT_MS'
>;

const INT8_OID = 20;
// Amounts are bigint columns but stay below 2^53, so plain numbers are exact.
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

export function createPool(url: string, settings: PoolSettings, logger: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: settings.DB_POOL_MAX,
    connectionTimeoutMillis: settings.DB_CONNECTION_TIMEOUT_MS,
    statement_timeout: settings.DB_STATEMENT_TIMEOUT_MS,
    // The client side gives up a little after the server would, so a dead server cannot hang a query.
    query_timeout: settings.DB_STATEMENT_TIMEOUT_MS + 1000,
    idle_in_transaction_session_timeout: settings.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    idleTimeoutMillis: 30000,
    types,
  });
  // An idle client losing its server must not crash the process; the pool replaces it.
  pool.on('error', (err) => logger.warn({ err }, 'idle database connection lost'));
  return pool;
}

export function createDb(pool: pg.Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

export function createMigrator(db: AnyDb): Migrator {
  return new Migrator({ db, provider: { getMigrations: async () => migrations } });
}

export const knownMigrations = (): string[] => Object.keys(migrations);

/** Applies every pending migration; throws with the name of the one that failed. */
export async function migrateToLatest(db: AnyDb): Promise<string[]> {
  const { error, results } = await createMigrator(db).migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error) {
    throw new Error(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${String(error)}`, {
      cause: error,
    });
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
