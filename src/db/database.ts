// The database handle: Kysely over a bounded pg pool that survives its server going away, where every
// wait and statement fits inside the deadline of the work it serves.
import { type Kysely as KyselyType, Kysely, PostgresDialect, type PostgresPool, sql, type Transaction } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import type { Logger } from 'pino';
import { migrations } from '../../migrations/index.ts';
import type { Config } from '../config.ts';
import { CommitUnknownError, databaseTrouble, DeadlineExceededError, StatementUnansweredError } from '../errors.ts';
import { currentDeadline } from '../request-context.ts';
import type { Database } from './schema.ts';

export type Db = Kysely<Database>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- migrations run on a handle that knows no table types
type AnyDb = KyselyType<any>;
export type DbOrTrx = Kysely<Database> | Transaction<Database>;

export type PoolSettings = Pick<
  Config,
  | 'DB_POOL_MAX'
  | 'DB_CONNECTION_TIMEOUT_MS'
  | 'DB_STATEMENT_TIMEOUT_MS'
  | 'DB_IDLE_IN_TRANSACTION_TIMEOUT_MS'
  | 'REQUEST_TIMEOUT_MS'
>;

const INT8_OID = 20;
// Amounts are bigint columns but stay below 2^53, so plain numbers are exact.
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** One short line for a lost connection: pg attaches the whole client object to the error. */
export const connectionLost = (err: Error & { code?: string }) => ({ code: err.code ?? 'none', reason: err.message });

const CLIENT_CHECK_INTERVAL_MS = 250;

export function createPool(url: string, settings: PoolSettings, logger: Logger): pg.Pool {
  const statementTimeout = Math.min(settings.DB_STATEMENT_TIMEOUT_MS, settings.REQUEST_TIMEOUT_MS);
  const pool = new pg.Pool({
    connectionString: url,
    max: settings.DB_POOL_MAX,
    connectionTimeoutMillis: settings.DB_CONNECTION_TIMEOUT_MS,
    // The bound of a statement sent outside a transaction; a transaction tightens it to its deadline.
    statement_timeout: statementTimeout,
    // The client side gives up a little after any bound the server would apply (a transaction's is at most
    // the request's budget), so a stalled server that enforces nothing cannot hang a query.
    query_timeout: settings.REQUEST_TIMEOUT_MS + 1000,
    idle_in_transaction_session_timeout: settings.DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
    // A client that stopped waiting (its deadline passed) destroys its connection; the server then ends
    // what that connection was still doing within this interval, instead of committing it later, once a
    // lock it waited for is let go (Postgres 14+; it does not notice a gone client on its own).
    options: `-c client_connection_check_interval=${CLIENT_CHECK_INTERVAL_MS}`,
    idleTimeoutMillis: 30000,
    types,
  });
  // pg-pool listens for errors only on idle clients. A checked-out client whose server goes away between
  // two queries (a restart, pg_terminate_backend) emits 'error' with nobody listening, and that kills the
  // process; so every client gets a listener of its own from the moment it exists. The pool then drops it.
  pool.on('connect', (client) => {
    client.on('error', (err) => logger.warn(connectionLost(err), 'database connection lost'));
  });
  pool.on('error', (err) => logger.debug(connectionLost(err), 'idle database connection lost'));
  return pool;
}

/**
 * The pool as Kysely sees it: waiting for a connection never outlasts the deadline of the work that
 * asks (a request's, a job's), whatever the pool's own connection timeout.
 */
function deadlineBoundPool(pool: pg.Pool): PostgresPool {
  return {
    connect: async () => releasedClean(await connectBy(pool, currentDeadline())),
    end: () => pool.end(),
    options: pool.options,
  };
}

/**
 * Kysely releases a connection without saying whether it is still usable. One whose statement outlived
 * the client's read timeout, or whose ROLLBACK failed, is still busy or inside a transaction: reused, it
 * would commit another caller's writes into that transaction. So such a client is destroyed instead.
 * Every statement also gets a read timeout from the deadline of the work it serves (see boundedQuery).
 */
function releasedClean(client: pg.PoolClient): pg.PoolClient {
  const release = client.release;
  client.release = (err?: Error | boolean) => {
    const idle = (client as unknown as { readyForQuery: boolean }).readyForQuery;
    const clean = idle && (client.getTransactionStatus() ?? 'I') === 'I';
    // Kysely says `false` for "no error"; anything truthy already asks the pool to destroy the client.
    release(err || (clean ? undefined : new Error('connection released busy or inside a transaction')));
  };
  if (!deadlineBound.has(client)) {
    deadlineBound.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>;
    // Kysely sends (text, values); anything else (pg-boss's callbacks through pool.query) passes untouched.
    (client as { query: unknown }).query = (...args: unknown[]) =>
      typeof args[0] === 'string' && args.length <= 2 && typeof args[1] !== 'function'
        ? boundedQuery(query, args[0], args[1] as unknown[] | undefined, currentDeadline())
        : query(...args);
  }
  return client;
}

const deadlineBound = new WeakSet<pg.PoolClient>();

// A transaction's first statement meets the server's own bound (statement_timeout, taken from the same
// deadline) before this one, and that error is definite; later, and for a statement sent on its own, the
// client gives up first and destroys the connection, and the server ends the statement within
// CLIENT_CHECK_INTERVAL_MS.
const READ_TIMEOUT_MARGIN_MS = 250;

/**
 * One statement, bounded by the deadline without a round trip of its own: the client stops waiting a
 * little after it (and the connection, left busy, is destroyed on release). The server's statement_timeout
 * still ends the statement itself.
 */
async function boundedQuery(
  query: (config: pg.QueryConfig) => Promise<pg.QueryResult>,
  text: string,
  values: unknown[] | undefined,
  deadline: number | undefined,
): Promise<pg.QueryResult> {
  if (deadline === undefined) return query({ text, values });
  const left = Math.floor(deadline - Date.now());
  if (left <= 0) throw new DeadlineExceededError('no time left for a database statement');
  try {
    return await query({ text, values, query_timeout: left + READ_TIMEOUT_MARGIN_MS } as pg.QueryConfig);
  } catch (err) {
    if ((err as Error).message === 'Query read timeout') {
      throw new StatementUnansweredError('the database did not answer the statement before the deadline', { cause: err });
    }
    throw err;
  }
}

async function connectBy(pool: pg.Pool, deadline: number | undefined): Promise<pg.PoolClient> {
  if (deadline === undefined) return pool.connect();
  const left = deadline - Date.now();
  if (left <= 0) throw new DeadlineExceededError('no time left to wait for a database connection');
  const pending = pool.connect();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineExceededError('waited for a database connection until the deadline')), left);
  });
  try {
    return await Promise.race([pending, timeout]);
  } catch (err) {
    // A connection that arrives after we stopped waiting goes straight back.
    pending.then((client) => client.release(), () => undefined);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

export function createDb(pool: pg.Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool: deadlineBoundPool(pool) }) });
}

// Below this, a transaction could not do anything useful; it fails at once instead.
const MIN_TRANSACTION_MS = 50;

/**
 * Runs `work` in one transaction whose statements and lock waits end by `deadline` (by default the
 * current request's or job's). The bounds ride on the BEGIN itself, so they cost no round trip.
 */
export async function inTransaction<T>(
  db: Db,
  work: (trx: Db) => Promise<T>,
  deadline: number | undefined = currentDeadline(),
): Promise<T> {
  let bounds = '';
  if (deadline !== undefined) {
    const left = Math.floor(deadline - Date.now());
    if (left < MIN_TRANSACTION_MS) throw new DeadlineExceededError('no time left for a database transaction');
    bounds = `; set local statement_timeout = ${left}; set local lock_timeout = ${left}`;
  }
  return db.connection().execute(async (conn) => {
    await sql.raw(`begin${bounds}`).execute(conn);
    let result: T;
    try {
      result = await work(conn);
    } catch (err) {
      await sql`rollback`.execute(conn).catch(() => undefined);
      throw err;
    }
    try {
      await sql`commit`.execute(conn);
    } catch (err) {
      // A server that refused the commit (a deferred constraint, a serialization failure) answered, and a
      // COMMIT never sent (no time left to send it) rolls back with its connection; a lost or timed-out
      // connection did not answer, and then nobody knows.
      const neverSent = err instanceof DeadlineExceededError && !(err instanceof StatementUnansweredError);
      if (databaseTrouble(err) && !neverSent) throw new CommitUnknownError(err);
      throw err;
    }
    return result;
  });
}

/**
 * Runs one statement as its own transaction, the cheapest way to write: one round trip, no BEGIN or
 * COMMIT. Sent and then unanswered (a lost connection, a read timeout), it may have committed or not,
 * so that comes out as a CommitUnknownError. An error while waiting for a connection means nothing was sent.
 */
export async function autocommit<T>(db: Db, statement: (conn: Db) => Promise<T>): Promise<T> {
  return db.connection().execute(async (conn) => {
    try {
      return await statement(conn);
    } catch (err) {
      if (err instanceof StatementUnansweredError || databaseTrouble(err) === 'unavailable') throw new CommitUnknownError(err);
      throw err;
    }
  });
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
