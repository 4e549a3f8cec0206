// Transactions bounded by their deadline, on a Postgres cluster this file owns (it freezes a backend).
import { sql } from 'kysely';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, type Db, inTransaction } from '../../src/db/database.ts';
import { databaseTrouble } from '../../src/errors.ts';
import { createLogger } from '../../src/logger.ts';
import { startTestCluster, type TestCluster } from '../helpers/cluster.ts';

let cluster: TestCluster;
let url: string;
beforeAll(async () => {
  cluster = await startTestCluster();
  url = await cluster.createDatabase();
  const setup = createDb(createPool(url, loadConfig({}), createLogger('silent')));
  await sql`create table scratch (v text primary key)`.execute(setup);
  await setup.destroy();
});
afterAll(() => cluster?.destroy());

/** A one-connection pool, so the next caller gets the very client the last one released. */
function onePool(env: Record<string, string>): { pool: pg.Pool; db: Db } {
  const pool = createPool(url, loadConfig({ DB_POOL_MAX: '1', ...env }), createLogger('silent'));
  return { pool, db: createDb(pool) };
}

const committed = async (db: Db) =>
  (await sql<{ v: string }>`select v from scratch order by v`.execute(db)).rows.map((r) => r.v);

describe('inTransaction', () => {
  it('never lends a transaction its backend stalled in to the next caller: the failed writes stay uncommitted', async () => {
    const { db } = onePool({ REQUEST_TIMEOUT_MS: '500' }); // the client's read timeout is 1.5 s
    let pid = 0;
    const first = inTransaction(db, async (trx) => {
      pid = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid;
      await sql`insert into scratch values ('stalled-1')`.execute(trx);
      process.kill(pid, 'SIGSTOP');
      await sql`insert into scratch values ('stalled-2')`.execute(trx);
    });
    await expect(first).rejects.toThrow();
    expect(databaseTrouble(await first.catch((e) => e))).toBe('unavailable');
    process.kill(pid, 'SIGCONT');

    await inTransaction(db, async (trx) => {
      await sql`insert into scratch values ('next')`.execute(trx);
    });
    expect(await committed(db)).toEqual(['next']);
    await db.destroy();
  });

  it('ends a lock wait at its deadline, as a timeout rather than a database that is down', async () => {
    const { db } = onePool({});
    const holder = onePool({}).db;
    await sql`insert into scratch values ('locked') on conflict do nothing`.execute(db);
    let release: () => void = () => undefined;
    const holding = inTransaction(
      holder,
      async (trx) => {
        await sql`select v from scratch where v = 'locked' for update`.execute(trx);
        await new Promise<void>((resolve) => {
          release = resolve;
        });
      },
      Date.now() + 30_000,
    );
    await expect
      // This database's locks only: on a shared server, another test's lock elsewhere is no sign that the holder has the row.
      .poll(async () => (await sql<{ n: number }>`select count(*)::int as n from pg_locks where mode = 'RowShareLock' and database = (select oid from pg_database where datname = current_database())`.execute(db)).rows[0]!.n, {
        timeout: 10_000,
      })
      .toBeGreaterThan(0);
    const waited = await inTransaction(
      db,
      (trx) => sql`select v from scratch where v = 'locked' for update`.execute(trx),
      Date.now() + 300,
    ).catch((e: unknown) => e);
    expect(databaseTrouble(waited)).toBe('timeout');
    release();
    await holding;
    await Promise.all([db.destroy(), holder.destroy()]);
  });
});
