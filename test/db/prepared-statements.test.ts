// Every parameterised statement is prepared once per connection and its plan kept. What that must survive:
// a migration that changes a table's shape under a running api (a rolling deploy adds a column), which makes
// the server refuse a prepared `select *` of the table ("cached plan must not change result type"). A
// statement on its own is prepared again and runs at once; a transaction runs again whole.
import { sql } from 'kysely';
import pg from 'pg';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, type Db, inTransaction } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { withDeadline } from '../../src/request-context.ts';
import { createTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
let admin: pg.Client;
beforeAll(async () => {
  // One connection, so the statement prepared before the change is the one run after it.
  ctx = await createTestContext({ DB_POOL_MAX: '1' });
  admin = new pg.Client({ connectionString: ctx.t.url });
  await admin.connect();
});
afterAll(async () => {
  await admin?.end();
  await ctx?.destroy();
});

/** The names of the statements prepared on the connections of this database, as the server lists them. */
async function preparedOnServer(db: Db): Promise<string[]> {
  const { rows } = await sql<{ statement: string }>`select statement from pg_prepared_statements`.execute(db);
  return rows.map((r) => r.statement);
}

describe('prepared statements', () => {
  it('a request prepares its statements on its connection once, and runs them named afterwards', async () => {
    const { auth } = await ctx.account();
    const charges = async (n: number) => {
      for (let i = 0; i < n; i += 1) expect((await postCharge(ctx, auth, newKey())).status).toBe(201);
      // The pool has one connection: what it prepared is what this statement, sent on it, lists.
      return withDeadline('list', 5000, () => preparedOnServer(ctx.db));
    };
    const prepared = await charges(3);
    expect(prepared.filter((text) => /insert into idempotency_keys/.test(text)).length, 'the claim, prepared').toBeGreaterThan(0);
    expect(new Set(prepared).size, 'no statement prepared twice').toBe(prepared.length);
    expect((await charges(3)).sort(), "more charges prepare nothing more").toEqual([...prepared].sort());
  });

  it('a table that gains a column under a running api: its reads and writes go on answering', async () => {
    const { auth } = await ctx.account();
    const created = await postCharge(ctx, auth, newKey());
    expect(created.status).toBe(201);
    const read = () => request(ctx.app).get(`/v1/charges/${created.body.id}`).set(auth);
    expect((await read()).status).toBe(200);
    expect((await read()).status).toBe(200);

    await admin.query('alter table charges add column prepared_test_note text');
    const after = await read();
    expect(after.status, JSON.stringify(after.body)).toBe(200);
    expect(after.body.id).toBe(created.body.id);
    expect((await postCharge(ctx, auth, newKey())).status).toBe(201);
    // Prepared again with a text of its own: a pooler that keys server-side statements by their text
    // (PgBouncer's max_prepared_statements) prepares it again too, rather than hand back the stale one.
    const prepared = await withDeadline('list', 5000, () => preparedOnServer(ctx.db));
    expect(prepared.filter((text) => /from "charges"/.test(text) && /prepared again as s\d+/.test(text))).toHaveLength(1);
  });

  it('a transaction whose prepared statement met a changed table runs again whole, and commits once', async () => {
    const db = createDb(createPool(ctx.t.url, loadConfig({ DB_POOL_MAX: '1' }), createLogger('silent')));
    try {
      await admin.query('create table scratch_shapes (id int primary key, v int not null default 0)');
      await admin.query('insert into scratch_shapes (id) values (1)');
      let runs = 0;
      const bump = () =>
        withDeadline('bump', 5000, () =>
          inTransaction(db, async (trx) => {
            runs += 1;
            const { rows } = await sql<{ id: number }>`select * from scratch_shapes where id = ${1}`.execute(trx);
            await sql`update scratch_shapes set v = v + 1 where id = ${rows[0]!.id}`.execute(trx);
          }),
        );
      await bump();
      await admin.query('alter table scratch_shapes add column w int');
      runs = 0;
      await bump();
      expect(runs, 'refused once, then run again').toBe(2);
      const { rows } = await admin.query<{ v: number }>('select v from scratch_shapes where id = 1');
      expect(rows[0]!.v).toBe(2);
    } finally {
      await db.destroy();
    }
  });
});
