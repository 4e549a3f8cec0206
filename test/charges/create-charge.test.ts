import { sql } from 'kysely';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { charge, createTestContext, ledgerFor, newKey, postCharge, processorKeyFor, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ REQUEST_TIMEOUT_MS: '3000', PROCESSOR_ATTEMPT_TIMEOUT_MS: '1000' });
});
afterAll(() => ctx.destroy());

describe('POST /v1/charges', () => {
  it('answers 201 with the succeeded charge when the processor approves', async () => {
    const { auth } = await ctx.account();
    const res = await postCharge(
      ctx,
      auth,
      newKey(),
      charge({ amount: 2500, currency: 'eur', description: 'Order #1', metadata: { order_id: '1' } }),
    );
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({
      id: expect.stringMatching(/^ch_/),
      object: 'charge',
      amount: 2500,
      currency: 'eur',
      status: 'succeeded',
      amount_refunded: 0,
      refunded: false,
      description: 'Order #1',
      metadata: { order_id: '1' },
      failure_code: null,
      failure_message: null,
      processor_reference: expect.stringMatching(/^pr_/),
      created: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
    });
    expect(res.headers.location).toBe(`/v1/charges/${res.body.id}`);
    const row = await ctx.t.db.selectFrom('charges').selectAll().where('id', '=', res.body.id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ status: 'succeeded', amount: 2500, processor_reference: res.body.processor_reference });
  });

  it('approves tok_mastercard too', async () => {
    const { auth } = await ctx.account();
    expect((await postCharge(ctx, auth, newKey(), charge({ source: 'tok_mastercard' }))).status).toBe(201);
  });

  it.each([
    ['tok_chargeDeclined', 'card_declined'],
    ['tok_insufficientFunds', 'insufficient_funds'],
    ['tok_expiredCard', 'expired_card'],
  ])('answers 402 with the failed charge when %s is declined (%s)', async (source, code) => {
    const { auth } = await ctx.account();
    const res = await postCharge(ctx, auth, newKey(), charge({ source }));
    expectProblem(res, 402, code);
    expect(res.body.charge).toMatchObject({
      object: 'charge',
      status: 'failed',
      failure_code: code,
      failure_message: expect.any(String),
    });
    expect(res.body.request_id).toBe(res.headers['x-request-id']);
    const row = await ctx.t.db
      .selectFrom('charges')
      .selectAll()
      .where('id', '=', res.body.charge.id)
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ status: 'failed', failure_code: code });
  });

  it('answers 202 pending with a Location when the processor is down, and the charge stays pending', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    try {
      const res = await postCharge(ctx, auth, newKey());
      expect(res.status).toBe(202);
      expect(res.body).toMatchObject({ status: 'pending', processor_reference: null, failure_code: null });
      expect(res.headers.location).toBe(`/v1/charges/${res.body.id}`);
      const read = await request(ctx.app).get(`/v1/charges/${res.body.id}`).set(auth);
      expect(read.body.status).toBe('pending');
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });

  it('sends the processor an idempotency key derived from our key row, and our request id', async () => {
    const { account, auth } = await ctx.account();
    const res = await postCharge(ctx, auth, newKey()).set('X-Request-Id', 'trace-me-123');
    const row = await ctx.t.db
      .selectFrom('idempotency_keys')
      .select('id')
      .where('account_id', '=', account.id)
      .executeTakeFirstOrThrow();
    const entries = ledgerFor((await ctx.ledger()).entries, processorKeyFor('charge', row.id));
    expect(entries).toHaveLength(1);
    expect(entries[0]!.id).toBe(res.body.processor_reference);
    expect(entries[0]!.request_id).toBe('trace-me-123');
  });
});

describe('GET /v1/charges/:id', () => {
  it('reads a charge of the caller', async () => {
    const { auth } = await ctx.account();
    const created = await postCharge(ctx, auth, newKey());
    const res = await request(ctx.app).get(`/v1/charges/${created.body.id}`).set(auth);
    expect(res.status).toBe(200);
    expect(res.body).toEqual(created.body);
  });

  it("answers 404, never 403, for another account's charge", async () => {
    const owner = await ctx.account();
    const other = await ctx.account();
    const created = await postCharge(ctx, owner.auth, newKey());
    expectProblem(await request(ctx.app).get(`/v1/charges/${created.body.id}`).set(other.auth), 404, 'not_found');
  });

  it.each(['ch_doesnotexist', 're_notacharge', '%00', 'ch_%F0%9F%92%A5'])('answers 404 for the id %s', async (id) => {
    const { auth } = await ctx.account();
    expectProblem(await request(ctx.app).get(`/v1/charges/${id}`).set(auth), 404, 'not_found');
  });

  it('ignores an Idempotency-Key header and stores nothing', async () => {
    const { account, auth } = await ctx.account();
    const created = await postCharge(ctx, auth, newKey());
    const res = await request(ctx.app).get(`/v1/charges/${created.body.id}`).set(auth).set('Idempotency-Key', newKey());
    expect(res.status).toBe(200);
    const keys = await ctx.t.db.selectFrom('idempotency_keys').select('id').where('account_id', '=', account.id).execute();
    expect(keys).toHaveLength(1);
  });
});

describe('GET /v1/charges', () => {
  it('lists newest first with cursor pagination', async () => {
    const { auth } = await ctx.account();
    const ids: string[] = [];
    for (let i = 0; i < 5; i += 1) ids.push((await postCharge(ctx, auth, newKey(), charge({ amount: 100 + i }))).body.id);
    const newestFirst = [...ids].reverse();

    const first = await request(ctx.app).get('/v1/charges?limit=2').set(auth);
    expect(first.status).toBe(200);
    expect(first.body.object).toBe('list');
    expect(first.body.data.map((c: { id: string }) => c.id)).toEqual(newestFirst.slice(0, 2));
    expect(first.body.has_more).toBe(true);

    const second = await request(ctx.app).get(`/v1/charges?limit=2&starting_after=${newestFirst[1]}`).set(auth);
    expect(second.body.data.map((c: { id: string }) => c.id)).toEqual(newestFirst.slice(2, 4));
    expect(second.body.has_more).toBe(true);

    const last = await request(ctx.app).get(`/v1/charges?limit=2&starting_after=${newestFirst[3]}`).set(auth);
    expect(last.body.data.map((c: { id: string }) => c.id)).toEqual(newestFirst.slice(4));
    expect(last.body.has_more).toBe(false);
  });

  it('pages through charges created in the same millisecond without skipping any', async () => {
    const { auth } = await ctx.account();
    const ids: string[] = [];
    for (let i = 0; i < 3; i += 1) ids.push((await postCharge(ctx, auth, newKey())).body.id);
    // Same millisecond, different microseconds: what a busy database really stores.
    for (const [i, id] of ids.entries()) {
      await sql`update charges set created_at = ${`2026-01-01T00:00:00.123${400 + i}Z`}::timestamptz where id = ${id}`.execute(
        ctx.t.db,
      );
    }
    const seen: string[] = [];
    let cursor = '';
    for (let page = 0; page < 5; page += 1) {
      const res = await request(ctx.app).get(`/v1/charges?limit=1${cursor}`).set(auth);
      seen.push(...res.body.data.map((c: { id: string }) => c.id));
      if (!res.body.has_more) break;
      cursor = `&starting_after=${seen.at(-1)}`;
    }
    expect(seen).toEqual([...ids].reverse());
  });

  it('defaults to 10 and shows only the caller’s charges', async () => {
    const mine = await ctx.account();
    const theirs = await ctx.account();
    await postCharge(ctx, theirs.auth, newKey());
    const own = await postCharge(ctx, mine.auth, newKey());
    const res = await request(ctx.app).get('/v1/charges').set(mine.auth);
    expect(res.body.data.map((c: { id: string }) => c.id)).toEqual([own.body.id]);
    expect(res.body.has_more).toBe(false);
  });

  it.each([
    ['limit=0', 'limit'],
    ['limit=101', 'limit'],
    ['limit=ten', 'limit'],
    ['colour=red', 'colour'],
    ['starting_after=ch_unknown', 'starting_after'],
    ['starting_after=%00', 'starting_after'],
  ])('answers 400 validation_failed for %s', async (query, path) => {
    const { auth } = await ctx.account();
    const res = await request(ctx.app).get(`/v1/charges?${query}`).set(auth);
    expectProblem(res, 400, 'validation_failed');
    expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path);
  });

  it("does not accept another account's charge as a cursor", async () => {
    const mine = await ctx.account();
    const theirs = await ctx.account();
    const other = await postCharge(ctx, theirs.auth, newKey());
    const res = await request(ctx.app).get(`/v1/charges?starting_after=${other.body.id}`).set(mine.auth);
    expectProblem(res, 400, 'validation_failed');
  });
});
