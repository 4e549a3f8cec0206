// Each test file gets its own freshly migrated database on the shared server: a copy of the template the
// global setup migrated once (CREATE DATABASE ... TEMPLATE copies files; migrating anew took most of it).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, type Db, migrateToLatest } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';

export interface TestDatabase {
  url: string;
  db: Db;
  pool: pg.Pool;
  destroy(): Promise<void>;
}

export function databaseUrl(serverUrl: string, database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

/**
 * One connection per test process to each server's admin database, kept from file to file: every test
 * database costs a CREATE and a DROP, and a new connection costs Postgres a process start (tens of
 * milliseconds of CPU on a small virtual machine), which was a fifth of all the connections a run made.
 */
const adminPools = new Map<string, pg.Pool>();

/** `work` on the admin connection of the run's server (or of the server at `url`). */
async function admin<T>(work: (client: pg.Pool) => Promise<T>, url: string = inject('adminDatabaseUrl')): Promise<T> {
  let pool = adminPools.get(url);
  if (!pool) {
    // Never holds a process open, and a server that goes away at the end of the run is no error.
    pool = new pg.Pool({ connectionString: url, max: 1, idleTimeoutMillis: 0, allowExitOnIdle: true });
    pool.on('error', () => undefined);
    adminPools.set(url, pool);
  }
  return work(pool);
}

/**
 * The test's own connections are not the service's: a test holds a transaction open on purpose (a
 * competing claim, a row lock) for as long as it needs, and its checks may wait on a busy machine, so the
 * service's idle-in-transaction (10 s) and statement (3 s) timeouts would end them at random.
 */
const TEST_HANDLE_SETTINGS = loadConfig({ DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: '600000', DB_STATEMENT_TIMEOUT_MS: '60000' });

/** A migrated database of this run; `migrate: false` gives one without a schema. */
export async function createTestDatabase(options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  const template = options.migrate === false ? 'template0' : inject('templateDatabase');
  // Copied file by file: writing the copy through the WAL (the default) cost Postgres several times the CPU.
  await admin((c) => c.query(`create database ${name} template ${template} strategy file_copy`));
  const url = databaseUrl(inject('adminDatabaseUrl'), name);
  const pool = createPool(url, TEST_HANDLE_SETTINGS, createLogger('silent'));
  const db = createDb(pool);
  return {
    url,
    db,
    pool,
    destroy: async () => {
      await db.destroy();
      await admin((c) => c.query(`drop database if exists ${name} with (force)`));
    },
  };
}

/**
 * Creates and migrates the database every test database of this run is copied from; the returned function
 * drops it. Nothing may stay connected to it (a copy needs the template to itself).
 */
export async function createTemplateDatabase(adminUrl: string): Promise<{ name: string; drop(): Promise<void> }> {
  const name = `t_template_${randomBytes(6).toString('hex')}`;
  const run = async (statement: string) => {
    await admin((c) => c.query(statement), adminUrl);
  };
  await run(`create database ${name}`);
  const pool = createPool(databaseUrl(adminUrl, name), loadConfig({}), createLogger('silent'));
  const db = createDb(pool);
  try {
    await migrateToLatest(db);
  } finally {
    await db.destroy();
  }
  return { name, drop: () => run(`drop database if exists ${name} with (force)`) };
}
