import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  charge,
  createTestContext,
  FAST_JOBS,
  ledgerFor,
  newKey,
  postCharge,
  processorKeyOf,
  readCharge,
  type TestContext,
} from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({ ...FAST_JOBS, SETTLE_MAX_ATTEMPTS: '50' });
  await ctx.startWorker();
});
afterAll(() => ctx.destroy());

const postRefund = (auth: Record<string, string>, key: string | null, body: unknown) => {
  const req = request(ctx.app).post('/v1/refunds').set(auth);
  if (key !== null) req.set('Idempotency-Key', key);
  return req.send(body as object);
};

async function succeededCharge(amount = 1000) {
  const owner = await ctx.account();
  const res = await postCharge(ctx, owner.auth, newKey(), charge({ amount }));
  expect(res.status).toBe(201);
  return { ...owner, chargeId: res.body.id as string };
}

const refundRowsOf = (chargeId: string) =>
  ctx.t.db.selectFrom('refunds').selectAll().where('charge_id', '=', chargeId).execute();

describe('POST /v1/refunds', () => {
  it('refunds the whole charge by default and shows it on the charge', async () => {
    const { auth, chargeId } = await succeededCharge(1000);
    const res = await postRefund(auth, newKey(), { charge: chargeId, reason: 'requested_by_customer' });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      id: expect.stringMatching(/^re_/),
      object: 'refund',
      amount: 1000,
      currency: 'usd',
      charge: chargeId,
      reason: 'requested_by_customer',
      status: 'succeeded',
      failure_code: null,
      failure_message: null,
      processor_reference: expect.stringMatching(/^prr_/),
      created: expect.any(String),
    });
    expect(res.headers.location).toBe(`/v1/refunds/${res.body.id}`);
    expect(await readCharge(ctx, auth, chargeId)).toMatchObject({ amount_refunded: 1000, refunded: true });
    const entries = ledgerFor((await ctx.ledger()).entries, await processorKeyOf(ctx, 'refunds', res.body.id));
    expect(entries).toMatchObject([{ type: 'refund', id: res.body.processor_reference, amount: 1000 }]);
  });

  it('refunds part of a charge, then the rest, and no more', async () => {
    const { auth, chargeId } = await succeededCharge(1000);
    expect((await postRefund(auth, newKey(), { charge: chargeId, amount: 300 })).status).toBe(201);
    expect(await readCharge(ctx, auth, chargeId)).toMatchObject({ amount_refunded: 300, refunded: false });
    expectProblem(await postRefund(auth, newKey(), { charge: chargeId, amount: 701 }), 409, 'refund_exceeds_charge');
    const rest = await postRefund(auth, newKey(), { charge: chargeId });
    expect(rest.status).toBe(201);
    expect(rest.body.amount).toBe(700);
    expect(await readCharge(ctx, auth, chargeId)).toMatchObject({ amount_refunded: 1000, refunded: true });
    const more = await postRefund(auth, newKey(), { charge: chargeId, amount: 1 });
    expectProblem(more, 409, 'charge_not_refundable');
    expect(more.body.detail).toContain('fully refunded');
    expectProblem(await postRefund(auth, newKey(), { charge: chargeId }), 409, 'charge_not_refundable');
  });

  it('answers 409 refund_exceeds_charge for more than the charge, refunding nothing', async () => {
    const { auth, chargeId } = await succeededCharge(500);
    const res = await postRefund(auth, newKey(), { charge: chargeId, amount: 501 });
    expectProblem(res, 409, 'refund_exceeds_charge');
    expect(res.body.detail).toContain('500');
    expect(await refundRowsOf(chargeId)).toHaveLength(0);
    expect((await readCharge(ctx, auth, chargeId)).amount_refunded).toBe(0);
  });

  it('answers 409 charge_not_refundable for a failed charge', async () => {
    const { auth } = await ctx.account();
    const declined = await postCharge(ctx, auth, newKey(), charge({ source: 'tok_chargeDeclined' }));
    const res = await postRefund(auth, newKey(), { charge: declined.body.charge.id });
    expectProblem(res, 409, 'charge_not_refundable');
    expect(res.body.detail).toContain('failed');
  });

  it('answers 409 charge_not_refundable for a pending charge', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const pending = await postCharge(ctx, auth, newKey());
    const res = await postRefund(auth, newKey(), { charge: pending.body.id });
    await ctx.setChaos({ mode: 'healthy' });
    expect(pending.status).toBe(202);
    expectProblem(res, 409, 'charge_not_refundable');
    expect(res.body.detail).toContain('pending');
  });

  it('stores a business refusal as the answer to its key and replays it', async () => {
    const { auth, chargeId } = await succeededCharge(500);
    const key = newKey();
    const first = await postRefund(auth, key, { charge: chargeId, amount: 900 });
    const again = await postRefund(auth, key, { charge: chargeId, amount: 900 });
    expectProblem(first, 409, 'refund_exceeds_charge');
    expect(again.status).toBe(409);
    expect(again.body).toEqual(first.body);
    expect(again.headers['idempotent-replayed']).toBe('true');
  });

  it("answers 404 for another account's charge, and for an unknown one", async () => {
    const { chargeId } = await succeededCharge();
    const stranger = await ctx.account();
    expectProblem(await postRefund(stranger.auth, newKey(), { charge: chargeId }), 404, 'not_found');
    expectProblem(await postRefund(stranger.auth, newKey(), { charge: 'ch_nosuchcharge' }), 404, 'not_found');
    expect(await refundRowsOf(chargeId)).toHaveLength(0);
  });

  it('replays a refund with the same key without refunding again', async () => {
    const { auth, chargeId } = await succeededCharge(1000);
    const key = newKey();
    const first = await postRefund(auth, key, { charge: chargeId, amount: 400 });
    const again = await postRefund(auth, key, { charge: chargeId, amount: 400 });
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(again.body).toEqual(first.body);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(await refundRowsOf(chargeId)).toHaveLength(1);
    expect((await readCharge(ctx, auth, chargeId)).amount_refunded).toBe(400);
  });

  it('answers 422 when a charge key is reused for a refund: the fingerprint covers the endpoint', async () => {
    const { auth, chargeId } = await succeededCharge();
    const key = newKey();
    expect((await postCharge(ctx, auth, key)).status).toBe(201);
    const res = await postRefund(auth, key, { charge: chargeId });
    expectProblem(res, 422, 'idempotency_key_reused');
    expect(res.body.detail).toContain('POST /v1/charges');
    expect(await refundRowsOf(chargeId)).toHaveLength(0);
  });

  it('never refunds more than the charge under 20 concurrent partial refunds with different keys', async () => {
    const { auth, chargeId } = await succeededCharge(1000);
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => postRefund(auth, newKey(), { charge: chargeId, amount: 150 })),
    );
    const ok = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status !== 201);
    expect(ok).toHaveLength(6);
    for (const a of refused) expect(a.body.code).toBe('refund_exceeds_charge');
    const rows = await refundRowsOf(chargeId);
    expect(rows.reduce((sum, r) => sum + r.amount, 0)).toBe(900);
    expect(await readCharge(ctx, auth, chargeId)).toMatchObject({ amount_refunded: 900, refunded: false });
    const processorCharge = (await readCharge(ctx, auth, chargeId)).processor_reference;
    const processorRefunds = (await ctx.ledger()).entries.filter((e) => e.type === 'refund' && e.charge === processorCharge);
    expect(processorRefunds.reduce((sum, e) => sum + e.amount, 0)).toBe(900);
  });

  it('answers 202 pending during a processor outage and the worker settles the refund after it', async () => {
    const { auth, chargeId } = await succeededCharge(1000);
    await ctx.setChaos({ mode: 'down' });
    const res = await postRefund(auth, newKey(), { charge: chargeId, amount: 250 });
    expect(res.status).toBe(202);
    expect(res.body.status).toBe('pending');
    // The pending refund holds its amount: the charge cannot be refunded past it meanwhile.
    expectProblem(await postRefund(auth, newKey(), { charge: chargeId, amount: 800 }), 409, 'refund_exceeds_charge');
    await ctx.setChaos({ mode: 'healthy' });
    await expect
      .poll(async () => (await request(ctx.app).get(`/v1/refunds/${res.body.id}`).set(auth)).body.status, {
        timeout: 20_000,
        interval: 200,
      })
      .toBe('succeeded');
    const [row] = await refundRowsOf(chargeId);
    expect(ledgerFor((await ctx.ledger()).entries, row!.processor_idempotency_key)).toHaveLength(1);
    expect((await readCharge(ctx, auth, chargeId)).amount_refunded).toBe(250);
  });

  it.each([
    ['charge missing', { amount: 100 }, 'charge'],
    ['charge not a charge id', { charge: 're_123' }, 'charge'],
    ['amount zero', { charge: 'ch_x', amount: 0 }, 'amount'],
    ['amount fractional', { charge: 'ch_x', amount: 1.5 }, 'amount'],
    ['reason unknown', { charge: 'ch_x', reason: 'changed_mind' }, 'reason'],
    ['an unknown field', { charge: 'ch_x', metadata: {} }, 'metadata'],
  ])('answers 400 validation_failed for %s, storing nothing', async (_name, body, path) => {
    const { account, auth } = await ctx.account();
    const res = await postRefund(auth, newKey(), body);
    expectProblem(res, 400, 'validation_failed');
    expect(res.body.errors.map((e: { path: string }) => e.path)).toContain(path);
    const keys = await ctx.t.db.selectFrom('idempotency_keys').select('id').where('account_id', '=', account.id).execute();
    expect(keys).toHaveLength(0);
  });

  it('answers 400 idempotency_key_missing without a key', async () => {
    const { auth, chargeId } = await succeededCharge();
    expectProblem(await postRefund(auth, null, { charge: chargeId }), 400, 'idempotency_key_missing');
  });
});

describe('GET /v1/refunds/:id', () => {
  it("reads the caller's refund and answers 404 to anyone else", async () => {
    const { auth, chargeId } = await succeededCharge();
    const created = await postRefund(auth, newKey(), { charge: chargeId, amount: 10 });
    const read = await request(ctx.app).get(`/v1/refunds/${created.body.id}`).set(auth);
    expect(read.status).toBe(200);
    expect(read.body).toEqual(created.body);
    const stranger = await ctx.account();
    expectProblem(await request(ctx.app).get(`/v1/refunds/${created.body.id}`).set(stranger.auth), 404, 'not_found');
    expectProblem(await request(ctx.app).get('/v1/refunds/%00').set(auth), 404, 'not_found');
  });
});
