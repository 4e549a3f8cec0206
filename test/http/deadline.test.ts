// The request deadline holds even when the database makes a request wait: a row locked by someone else.
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
      await blocker.query('commit');
      blocker.release();
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
      // transaction ends: while it is still open, the late work has already given up, as a timeout, not as
      // a database that is down.
      const late = () =>
        ctx.logs.lines.find((l) => l.msg === 'work finished after the request deadline' && l.request_id === waited.body.request_id);
      await expect.poll(late, { timeout: 10_000, interval: 50 }).toBeDefined();
      expect(String(late()!.cause)).toMatch(/\((55P03|57014)\)|did not answer the statement before the deadline/);
    } finally {
      // The other claim never commits: the key is free, and the retry runs the charge.
      await blocker.query('rollback');
      blocker.release();
    }
    const retry = await postCharge(ctx, auth, key);
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    const again = await postCharge(ctx, auth, key);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.text).toBe(retry.text);
  });
});
