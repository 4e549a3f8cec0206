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

/** `work` on a connection of its own to the server's admin database (the run's server unless `url` is given). */
async function admin<T>(work: (client: pg.Client) => Promise<T>, url: string = inject('adminDatabaseUrl')): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
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
  await admin((c) => c.query(`create database ${name} template ${template}`));
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
