// The request deadline holds even when the database makes a request wait: a row locked by someone else.
import { sql } from 'kysely';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ REQUEST_TIMEOUT_MS: '2500', DB_STATEMENT_TIMEOUT_MS: '20000' });
});
afterAll(() => ctx.destroy());

describe('the request deadline', () => {
  it('answers a replay at once while another transaction holds its key row locked: a replay takes no lock', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const first = await postCharge(ctx, auth, key);
    expect(first.status).toBe(201);

    const blocker = await ctx.t.pool.connect();
    try {
      await blocker.query('begin');
      await blocker.query('select id from idempotency_keys where account_id = $1 and key = $2 for update', [account.id, key]);
      const replay = await postCharge(ctx, auth, key).timeout(8000);
      expect(replay.status).toBe(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.text).toBe(first.text);
    } finally {
      // Released whatever happened to the connection, or the pool's end would wait for it forever.
      await blocker.query('commit').finally(() => blocker.release(true));
    }
  });

  it('answers 503 request_timeout at the deadline while another claim of the same key is uncommitted, and a retry gets the answer', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const blocker = await ctx.t.pool.connect();
    try {
      // Another request's claim of the same key, begun and not yet committed: ours has to wait for it.
      await blocker.query('begin');
      await blocker.query(
        `insert into idempotency_keys (account_id, key, request_method, request_path, request_fingerprint, request_body,
                                       recovery_point, expires_at)
         values ($1, $2, 'POST', '/v1/charges', 'x', '{}', 'intent_recorded', now() + interval '1 day')`,
        [account.id, key],
      );
      const waited = await postCharge(ctx, auth, key).timeout(8000);
      expectProblem(waited, 503, 'request_timeout');
      expect(waited.headers['retry-after']).toBe('1');
      expect(waited.body.detail).toMatch(/outcome is unknown.*same Idempotency-Key/);
      // The process keeps serving meanwhile.
      expect((await request(ctx.app).get('/livez')).status).toBe(200);
      // The wait itself ends by the deadline, not after the 20 s statement timeout nor when the other
      // transaction ends: while it is still open, the work has already given up, as a timeout, not as a
      // database that is down. Its statement's bound and the deadline's timer run out together, so the
      // line is either the 503 itself (the statement ended first) or the late work's (the timer did).
      const ended = () =>
        ctx.logs.lines.find(
          (l) =>
            l.request_id === waited.body.request_id &&
            (l.msg === 'work finished after the request deadline' || (l.code === 'request_timeout' && l.cause !== undefined)),
        );
      await expect.poll(ended, { timeout: 10_000, interval: 50 }).toBeDefined();
      expect(String(ended()!.cause)).toMatch(/\((55P03|57014)\)|did not answer the statement before the deadline/);
    } finally {
      // The other claim never commits: the key is free, and the retry runs the charge.
      // Released whatever happened to the connection, or the pool's end would wait for it forever.
      await blocker.query('rollback').finally(() => blocker.release(true));
    }
    const retry = await postCharge(ctx, auth, key);
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    const again = await postCharge(ctx, auth, key);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.text).toBe(retry.text);
  });

  it('leaves nothing behind when a request gives up on a statement waiting for a lock: the server ends it too, and a retry runs at once', async () => {
    const { auth } = await ctx.account();
    const charge = await postCharge(ctx, auth, newKey());
    expect(charge.status).toBe(201);
    const key = newKey();
    const refund = () => request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', key).send({ charge: charge.body.id, amount: 300 });
    const blocker = await ctx.t.pool.connect();
    try {
      // Someone holds the charge's row: the refund's one claiming statement waits for it.
      await blocker.query('begin');
      await blocker.query('select id from charges where id = $1 for update', [charge.body.id]);
      const waited = await refund().timeout(8000);
      expectProblem(waited, 503, 'request_timeout');
      // The client went away, and the server stops waiting on its behalf.
      const waiting = async () => {
        const { rows } = await ctx.t.pool.query(
          "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
        );
        return rows[0].n as number;
      };
      await expect.poll(waiting, { timeout: 10_000, interval: 100 }).toBe(0);
    } finally {
      // Released whatever happened to the connection, or the pool's end would wait for it forever.
      await blocker.query('commit').finally(() => blocker.release(true));
    }
    // Nothing was committed after the answer: no key, no refund, nothing held on the charge.
    const keys = await ctx.t.pool.query('select count(*)::int as n from idempotency_keys where key = $1', [key]);
    expect(keys.rows[0].n).toBe(0);
    const held = await ctx.t.pool.query('select amount_refunded from charges where id = $1', [charge.body.id]);
    expect(Number(held.rows[0].amount_refunded)).toBe(0);
    const retry = await refund();
    expect(retry.status).toBe(201);
    expect(retry.body).toMatchObject({ status: 'succeeded', amount: 300 });
    // Here the statement's own timeout (the request's budget) ended it. A statement that starts late in its
    // request outlives the deadline by up to that much: for it, the server looks for a vanished client
    // every 250 ms on the app's connections.
    const { rows } = await sql<{ client_connection_check_interval: string }>`show client_connection_check_interval`.execute(ctx.db);
    expect(rows[0]!.client_connection_check_interval).toBe('250ms');
  });
});
