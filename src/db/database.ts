// The database handle: Kysely over a bounded pg pool that survives its server going away, where every
// wait and statement fits inside the deadline of the work it serves.
import { type Kysely as KyselyType, Kysely, PostgresDialect, type PostgresPool, sql, type Transaction } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import type { Logger } from 'pino';
import { migrations } from '../../migrations/index.ts';
import type { Config } from '../config.ts';
import {
  CommitUnknownError,
  databaseTrouble,
  DeadlineExceededError,
  isRetryableConflict,
  StatementReplannedError,
  StatementUnansweredError,
} from '../errors.ts';
import { createOutageLog, type OutageLog } from '../outage-log.ts';
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
// An idle connection to a host that vanished (a failed-over node, a cut network) is noticed after this
// much silence plus the kernel's probes (libuv sends them every second, ten of them), not after the
// kernel's default of two hours.
const KEEPALIVE_IDLE_MS = 3000;

/** What the pool's clients report to: one line when the database is lost, one when it is back. */
const outages = new WeakMap<pg.Pool, OutageLog>();
export const outageLogOf = (pool: pg.Pool, logger: Logger): OutageLog => {
  let outage = outages.get(pool);
  if (!outage) {
    const probe = () => (pool.ending ? Promise.reject(new Error('pool closed')) : pool.query('select 1'));
    outages.set(pool, (outage = createOutageLog(logger, probe)));
  }
  return outage;
};

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
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
    types,
  });
  const outage = outageLogOf(pool, logger);
  // pg-pool listens for errors only on idle clients. A checked-out client whose server goes away between
  // two queries (a restart, pg_terminate_backend) emits 'error' with nobody listening, and that kills the
  // process; so every client gets a listener of its own from the moment it exists. The pool then drops it.
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      if (!outage.report(err, 'connection')) logger.warn(connectionLost(err), 'database connection lost');
    });
  });
  pool.on('error', (err) => logger.debug(connectionLost(err), 'idle database connection lost'));
  return pool;
}

/**
 * The pool as Kysely sees it: waiting for a connection never outlasts the deadline of the work that
 * asks (a request's, a job's), whatever the pool's own connection timeout.
 */
function deadlineBoundPool(pool: pg.Pool): PostgresPool {
  const outage = outages.get(pool);
  return {
    connect: async () => {
      try {
        return releasedClean(await connectBy(pool, currentDeadline()), outage);
      } catch (err) {
        outage?.report(err, 'connect');
        throw err;
      }
    },
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
function releasedClean(client: pg.PoolClient, outage: OutageLog | undefined): pg.PoolClient {
  const release = client.release;
  client.release = (err?: Error | boolean) => {
    const idle = (client as unknown as { readyForQuery: boolean }).readyForQuery;
    const clean = idle && (client.getTransactionStatus() ?? 'I') === 'I' && !unusable.has(client);
    // Kysely says `false` for "no error"; anything truthy already asks the pool to destroy the client.
    release(err || (clean ? undefined : new Error('connection released busy, inside a transaction, or unusable')));
  };
  if (!deadlineBound.has(client)) {
    deadlineBound.add(client);
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>;
    // Kysely sends (text, values); anything else (pg-boss's callbacks through pool.query) passes untouched.
    (client as { query: unknown }).query = async (...args: unknown[]) => {
      if (!(typeof args[0] === 'string' && args.length <= 2 && typeof args[1] !== 'function')) return query(...args);
      try {
        const inTransaction = (client.getTransactionStatus() ?? 'I') !== 'I';
        const result = await boundedQuery(query, args[0], args[1] as unknown[] | undefined, currentDeadline(), inTransaction);
        outage?.recovered();
        return result;
      } catch (err) {
        // A connection to a server that cannot take our work (read-only after a failover, shutting down)
        // is never handed out again: the next one may reach the new primary.
        if (databaseTrouble(err) === 'unavailable') {
          unusable.add(client);
          outage?.report(err, 'statement');
        }
        throw err;
      }
    };
  }
  return client;
}

const deadlineBound = new WeakSet<pg.PoolClient>();
const unusable = new WeakSet<pg.PoolClient>();

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
  inTransaction: boolean,
  replanned = false,
): Promise<pg.QueryResult> {
  const prepared = values?.length ? preparedStatement(text) : undefined;
  let timeout: { query_timeout?: number } = {};
  if (deadline !== undefined) {
    const left = Math.floor(deadline - Date.now());
    if (left <= 0) throw new DeadlineExceededError('no time left for a database statement');
    timeout = { query_timeout: left + READ_TIMEOUT_MARGIN_MS };
  }
  try {
    return await query({ text: prepared?.sent ?? text, values, name: prepared?.name, ...timeout } as pg.QueryConfig);
  } catch (err) {
    if (deadline !== undefined && (err as Error).message === 'Query read timeout') {
      throw new StatementUnansweredError('the database did not answer the statement before the deadline', { cause: err });
    }
    if (prepared && isPlanOfChangedTable(err)) {
      // A table this prepared statement reads changed shape (a migration added a column to a `select *`):
      // the server refused it before running it. It is prepared again, under a new name and with a
      // text of its own (a pooler that shares server-side statements by their text, as PgBouncer does,
      // then prepares it again too). On its own it runs again once, at once; in a transaction (which
      // the refusal ended) the whole transaction runs again, like any conflict the server rolled back.
      prepareAgain(text, prepared);
      if (!inTransaction && !replanned) return boundedQuery(query, text, values, deadline, inTransaction, true);
      throw new StatementReplannedError('a prepared statement outlived its table\'s shape; prepared again', { cause: err });
    }
    throw err;
  }
}

/**
 * Prepared statements: every parameterised statement text gets a name, so each connection parses it once
 * and the server keeps its plan (a generic one once it is as good; see plan_cache_mode), instead of parsing
 * and planning every call. A statement with parameters is one statement, never a script; the texts are
 * the code's own shapes (values travel apart), and past MAX_NAMED_STATEMENTS a new text goes unnamed.
 */
interface Prepared {
  name: string;
  /** The text sent: the code's own, or, once prepared again, the same with a comment that tells it apart. */
  sent: string;
}
const preparedStatements = new Map<string, Prepared>();
const MAX_NAMED_STATEMENTS = 500;
let statementsNamed = 0;

function preparedStatement(text: string): Prepared | undefined {
  let prepared = preparedStatements.get(text);
  if (prepared === undefined && preparedStatements.size < MAX_NAMED_STATEMENTS) {
    prepared = { name: `s${(statementsNamed += 1)}`, sent: text };
    preparedStatements.set(text, prepared);
  }
  return prepared;
}

/** A new name and text for a statement the server refused to run as prepared (unless a caller did so already). */
function prepareAgain(text: string, refused: Prepared): void {
  if (preparedStatements.get(text) !== refused) return;
  const name = `s${(statementsNamed += 1)}`;
  preparedStatements.set(text, { name, sent: `${text}\n/* prepared again as ${name} */` });
}

// The server's own function name says it whatever the language of its messages (lc_messages).
const isPlanOfChangedTable = (err: unknown) =>
  (err as { code?: string }).code === '0A000' &&
  ((err as { routine?: string }).routine === 'RevalidateCachedQuery' || /cached plan must not change result type/.test((err as Error).message));

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

/** The cheapest statement the database can answer: whether it answers at all. */
export async function ping(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
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
  return retryingConflicts(() => oneTransaction(db, work, deadline), deadline);
}

async function oneTransaction<T>(db: Db, work: (trx: Db) => Promise<T>, deadline: number | undefined): Promise<T> {
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
  const once = () =>
    db.connection().execute(async (conn) => {
      try {
        return await statement(conn);
      } catch (err) {
        // A read-only server refused the statement: that is an answer, and nothing was written.
        if ((err as { code?: string }).code === READ_ONLY) throw err;
        if (err instanceof StatementUnansweredError || databaseTrouble(err) === 'unavailable') throw new CommitUnknownError(err);
        throw err;
      }
    });
  return retryingConflicts(once, currentDeadline());
}

const READ_ONLY = '25006';

// Without a deadline (a command, a test), a conflict that keeps coming back is reported after this many runs.
const CONFLICT_TRIES = 5;
const CONFLICT_BACKOFF_MS = 20;

/**
 * Runs `run` again when the server rolled it back for a deadlock or a serialization failure, with a short
 * jittered pause so the two parties do not meet again, as long as the deadline leaves time for it.
 */
async function retryingConflicts<T>(run: () => Promise<T>, deadline: number | undefined): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await run();
    } catch (err) {
      if (!isRetryableConflict(err)) throw err;
      const pause = Math.random() * CONFLICT_BACKOFF_MS * 2 ** Math.min(attempt, 5);
      if (deadline === undefined ? attempt >= CONFLICT_TRIES : Date.now() + pause + MIN_TRANSACTION_MS >= deadline) {
        // Out of time: to the client this is a request that did not finish in time, not a 500.
        if (deadline !== undefined) throw new DeadlineExceededError('kept meeting deadlocks until the deadline', { cause: err });
        throw err;
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}

/** The database answered, and no wait will change the answer: the configuration must (one line, then exit). */
export class DatabaseSetupError extends Error {}

// Refusals that stay until someone changes the configuration or the server's.
const SETUP_CODES: Record<string, string> = {
  '28P01': 'wrong password',
  '28000': 'connection not allowed for this user',
  '3D000': 'no such database',
  '42501': 'permission denied',
};
const START_WAIT_FIRST_MS = 250;
const START_WAIT_MAX_MS = 5000;

/**
 * Waits until the database takes connections and writes (a primary out of recovery), with jittered
 * backoff: a process started before its database, or during a failover, starts when the database is
 * ready rather than exiting. Says so once when it begins to wait and once when it is done. Throws a
 * DatabaseSetupError on an answer no wait will change, and stops early when `stopping()` says so.
 */
export async function waitForDatabase(pool: pg.Pool, logger: Logger, stopping: () => boolean): Promise<void> {
  let waitedSince: number | undefined;
  for (let wait = START_WAIT_FIRST_MS; !stopping(); wait = Math.min(wait * 2, START_WAIT_MAX_MS)) {
    let reason: { code?: string; reason: string };
    try {
      const { rows } = await pool.query<{ read_only: boolean }>(`select current_setting('transaction_read_only') = 'on' as read_only`);
      if (!rows[0]?.read_only) {
        if (waitedSince !== undefined) logger.info({ waited_ms: Date.now() - waitedSince }, 'database ready: starting');
        return;
      }
      reason = { code: '25006', reason: 'the server is read-only (a standby, or still recovering)' };
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.code && SETUP_CODES[e.code]) {
        throw new DatabaseSetupError(`cannot use the database: ${SETUP_CODES[e.code]} (${e.message}); check DATABASE_URL`);
      }
      if (!databaseTrouble(err)) throw err;
      reason = { code: e.code, reason: e.message };
    }
    if (waitedSince === undefined) {
      waitedSince = Date.now();
      logger.warn(reason, 'waiting for the database: /livez answers 200, /readyz 503 meanwhile');
    }
    await new Promise((resolve) => setTimeout(resolve, wait / 2 + Math.random() * (wait / 2)));
  }
}

/**
 * Missing migrations, by name, and whether the server takes writes (a standby, or a primary still in
 * crash recovery, reached through a proxy does not); throws when the database does not answer.
 */
export async function databaseState(db: Db): Promise<{ missing: string[]; readOnly: boolean }> {
  const { rows } = await sql<{ names: string[] | null; read_only: boolean }>`
    select (select array_agg(name) from kysely_migration) as names,
           current_setting('transaction_read_only') = 'on' as read_only`.execute(db);
  const applied = new Set(rows[0]?.names ?? []);
  return { missing: knownMigrations().filter((m) => !applied.has(m)), readOnly: rows[0]?.read_only ?? false };
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
