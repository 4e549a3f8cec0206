// Each test file gets its own freshly migrated database on the shared server.
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

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: inject('adminDatabaseUrl') });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** Creates an empty database; `migrate: false` leaves it without a schema. */
export async function createTestDatabase(options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const name = `t_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database ${name}`));
  const url = databaseUrl(inject('adminDatabaseUrl'), name);
  const pool = createPool(url, loadConfig({}), createLogger('silent'));
  const db = createDb(pool);
  if (options.migrate !== false) await migrateToLatest(db);
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
