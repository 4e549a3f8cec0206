// Database answers that are not the request's fault: a deadlock between two transactions, and a server
// that turned read-only under the pool (a standby or a recovering primary reached through a proxy).
import { sql } from 'kysely';
import pg from 'pg';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, createPool, type Db, inTransaction } from '../../src/db/database.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { withDeadline } from '../../src/request-context.ts';
import { charge, createTestContext, newKey, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext;
let db: Db;
beforeAll(async () => {
  ctx = await createTestContext();
  db = createDb(createPool(ctx.t.url, loadConfig({}), createLogger('silent')));
  await sql`create table scratch_locks (id int primary key, v int not null default 0)`.execute(db);
  await sql`insert into scratch_locks (id) values (1), (2)`.execute(db);
});
afterAll(async () => {
  await db?.destroy();
  await ctx?.destroy();
});

describe('inTransaction', () => {
  it('runs a transaction the server chose as a deadlock victim again, so both sides commit', async () => {
    const deadlocks = async () =>
      (await sql<{ n: number }>`select deadlocks::int as n from pg_stat_database where datname = current_database()`.execute(db)).rows[0]!.n;
    const before = await deadlocks();
    const runs = { a: 0, b: 0 };
    let bothLocked: () => void;
    const gate = new Promise<void>((resolve) => (bothLocked = resolve));
    let locked = 0;
    // Each locks its own row, waits until the other did, then asks for the other's: one of them must lose.
    const side = (name: 'a' | 'b', first: number, second: number) =>
      withDeadline(`deadlock-${name}`, 20_000, () =>
        inTransaction(db, async (trx) => {
          runs[name] += 1;
          await sql`update scratch_locks set v = v + 1 where id = ${first}`.execute(trx);
          if (runs[name] === 1 && (locked += 1) === 2) bothLocked();
          if (runs[name] === 1) await gate;
          await sql`update scratch_locks set v = v + 1 where id = ${second}`.execute(trx);
          return name;
        }),
      );
    const results = await Promise.all([side('a', 1, 2), side('b', 2, 1)]);
    expect(results).toEqual(['a', 'b']);
    expect(await deadlocks(), 'the server detected the deadlock').toBe(before + 1);
    expect(runs.a + runs.b, 'the victim ran once more').toBe(3);
    const { rows } = await sql<{ v: number }>`select v from scratch_locks order by id`.execute(db);
    expect(rows.map((r) => r.v)).toEqual([2, 2]);
  });
});

describe('a database that turned read-only under the pool', () => {
  it('answers 503 database_unavailable (never 500), fails readiness, and recovers once the server takes writes again: no read-only connection is reused', async () => {
    const { auth } = await ctx.account();
    const admin = new pg.Client({ connectionString: ctx.t.url });
    await admin.connect();
    const database = new URL(ctx.t.url).pathname.slice(1);
    try {
      // New sessions of this database are read-only, and the app's current ones end: as after a failover
      // that left a proxy pointing at a standby.
      await admin.query(`alter database ${database} set default_transaction_read_only = on`);
      await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`);

      for (let i = 0; i < 6; i += 1) {
        const res = await request(ctx.app).post('/v1/charges').set(auth).set('Idempotency-Key', newKey()).send(charge());
        expectProblem(res, 503, 'database_unavailable');
        expect(res.headers['retry-after']).toBeDefined();
      }
      const ready = await request(ctx.app).get('/readyz');
      expect(ready.status).toBe(503);
      expect(ready.body.checks.database).toEqual({ status: 'fail', code: 'database_read_only' });

      // Writes are back for new sessions only: the app recovers only if it drops each read-only one. Any
      // still idle in the pool (it served a read, which a read-only server answers) fails one write, once.
      await admin.query(`alter database ${database} reset default_transaction_read_only`);
      const after: string[] = [];
      for (let i = 0; i <= ctx.config.DB_POOL_MAX && after.at(-1) !== '201'; i += 1) {
        const res = await request(ctx.app).post('/v1/charges').set(auth).set('Idempotency-Key', newKey()).send(charge());
        after.push(res.status === 201 ? '201' : `${res.status} ${res.body.code}`);
      }
      expect(after.at(-1), after.join(', ')).toBe('201');
      expect(after.slice(0, -1).every((a) => a === '503 database_unavailable'), after.join(', ')).toBe(true);
      expect((await request(ctx.app).get('/readyz')).status).toBe(200);
      const lines = ctx.logs.lines.filter((l) => l.msg === 'unhandled error');
      expect(lines, 'no database condition is an unhandled error').toEqual([]);
    } finally {
      await admin.query(`alter database ${database} reset default_transaction_read_only`).catch(() => undefined);
      await admin.end();
    }
  });
});
