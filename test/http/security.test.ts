// What one account may see of another (nothing), and what every answer tells browsers and caches.
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.destroy());

const rowsOf = async (accountId: string) => ({
  charges: await ctx.t.db.selectFrom('charges').selectAll().where('account_id', '=', accountId).execute(),
  refunds: await ctx.t.db.selectFrom('refunds').selectAll().where('account_id', '=', accountId).execute(),
});

describe('another account', () => {
  it('sees none of an account’s charges and refunds, and cannot refund them: 404 everywhere, nothing changed', async () => {
    const owner = await ctx.account();
    const other = await ctx.account();
    const charge = await postCharge(ctx, owner.auth, newKey());
    expect(charge.status).toBe(201);
    const refund = await request(ctx.app)
      .post('/v1/refunds')
      .set(owner.auth)
      .set('Idempotency-Key', newKey())
      .send({ charge: charge.body.id, amount: 100 });
    expect(refund.status).toBe(201);
    const before = await rowsOf(owner.account.id);

    expectProblem(await request(ctx.app).get(`/v1/charges/${charge.body.id}`).set(other.auth), 404, 'not_found');
    expectProblem(await request(ctx.app).get(`/v1/refunds/${refund.body.id}`).set(other.auth), 404, 'not_found');
    const list = await request(ctx.app).get('/v1/charges?limit=100').set(other.auth);
    expect(list.status).toBe(200);
    expect(list.body.data).toEqual([]);
    const cursor = await request(ctx.app).get(`/v1/charges?starting_after=${charge.body.id}`).set(other.auth);
    expectProblem(cursor, 400, 'validation_failed');
    const stolen = await request(ctx.app)
      .post('/v1/refunds')
      .set(other.auth)
      .set('Idempotency-Key', newKey())
      .send({ charge: charge.body.id, amount: 100 });
    expectProblem(stolen, 404, 'not_found');
    expect(await rowsOf(owner.account.id)).toEqual(before);
    expect((await rowsOf(other.account.id)).refunds).toEqual([]);
  });

  it('gets its own answer for an idempotency key the other account used too', async () => {
    const a = await ctx.account();
    const b = await ctx.account();
    const key = newKey();
    const first = await postCharge(ctx, a.auth, key);
    const second = await postCharge(ctx, b.auth, key);
    expect([first.status, second.status]).toEqual([201, 201]);
    expect(second.headers['idempotent-replayed']).toBeUndefined();
    expect(second.body.id).not.toBe(first.body.id);
  });
});

describe('every answer', () => {
  it('carries X-Content-Type-Options: nosniff and Cache-Control: no-store, errors included', async () => {
    const { auth } = await ctx.account();
    const answers = [
      await request(ctx.app).get('/livez'),
      await request(ctx.app).get('/readyz'),
      await request(ctx.app).get('/health'),
      await request(ctx.app).get('/metrics'),
      await request(ctx.app).get('/v1/account').set(auth),
      await request(ctx.app).get('/v1/account'),
      await request(ctx.app).get('/v1/nowhere').set(auth),
      await postCharge(ctx, auth, newKey()),
      await postCharge(ctx, auth, newKey(), { amount: -1 }),
      await request(ctx.app).post('/v1/charges').set(auth).set('Idempotency-Key', newKey()).set('Content-Type', 'application/json').send('{'),
    ];
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 401, 404, 201, 400, 400]);
    for (const [i, a] of answers.entries()) {
      expect(a.headers['x-content-type-options'], `answer ${i}`).toBe('nosniff');
      expect(a.headers['cache-control'], `answer ${i}`).toBe('no-store');
    }
  });
});
