// Events: every state change of a charge or refund is an event written with the change, exactly once,
// whichever path made it (the request at once, the careful way, the settle worker, two workers racing);
// a change that rolls back leaves no event and no delivery; and an account sees only its own events.
import { sql } from 'kysely';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chargePayments } from '../../src/charges/charges.service.ts';
import { inTransaction } from '../../src/db/database.ts';
import { buildApp } from '../helpers/app.ts';
import { charge, createTestContext, FAST_JOBS, newKey, postCharge, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

// One world for the tests that need no worker (each makes accounts of its own and reads only their rows);
// those that settle charges build their own.
let shared: TestContext;
let ctx: TestContext | undefined;
beforeAll(async () => {
  shared = await createTestContext();
});
afterAll(() => shared.destroy());
afterEach(async () => {
  if (ctx !== shared) await ctx?.destroy();
  ctx = undefined;
});

const eventsOf = async (c: TestContext, objectId: string) =>
  (
    await sql<{ type: string }>`select type from events where data->>'id' = ${objectId} order by created_at, type`.execute(c.t.db)
  ).rows.map((r) => r.type);

describe('events', () => {
  it('records charge.succeeded, charge.failed and refund.succeeded once each, and lists them newest first', async () => {
    ctx = shared;
    const { auth } = await ctx.account();
    const paid = (await postCharge(ctx, auth, newKey())).body;
    const declined = (await postCharge(ctx, auth, newKey(), charge({ source: 'tok_chargeDeclined' }))).body.charge;
    const refund = (await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: paid.id, amount: 400 })).body;
    expect(refund.status).toBe('succeeded');

    expect(await eventsOf(ctx, paid.id)).toEqual(['charge.succeeded', 'charge.refunded']);
    expect(await eventsOf(ctx, declined.id)).toEqual(['charge.failed']);
    expect(await eventsOf(ctx, refund.id)).toEqual(['refund.succeeded']);

    const list = (await request(ctx.app).get('/v1/events').set(auth)).body;
    expect(list.data.map((e: { type: string }) => e.type)).toEqual(['refund.succeeded', 'charge.refunded', 'charge.failed', 'charge.succeeded']);
    const [latest] = list.data;
    expect(latest).toMatchObject({ object: 'event', type: 'refund.succeeded', data: { object: { id: refund.id, status: 'succeeded', amount: 400 } } });
    expect((await request(ctx.app).get(`/v1/events/${latest.id}`).set(auth)).body).toEqual(latest);

    // The type filter and the cursor.
    const failed = (await request(ctx.app).get('/v1/events?type=charge.failed').set(auth)).body;
    expect(failed.data.map((e: { data: { object: { id: string } } }) => e.data.object.id)).toEqual([declined.id]);
    const page1 = (await request(ctx.app).get('/v1/events?limit=2').set(auth)).body;
    expect(page1.has_more).toBe(true);
    const page2 = (await request(ctx.app).get(`/v1/events?limit=2&starting_after=${page1.data[1].id}`).set(auth)).body;
    expect(page2).toMatchObject({ has_more: false, data: [{ type: 'charge.failed' }, { type: 'charge.succeeded' }] });
    expectProblem(await request(ctx.app).get('/v1/events?type=charge.exploded').set(auth), 400, 'validation_failed');
    expectProblem(await request(ctx.app).get('/v1/events/evt_nope').set(auth), 404, 'not_found');
  });

  it('carries in data.object, byte for byte, what GET of that object answered at that moment', async () => {
    ctx = shared;
    const { auth } = await ctx.account();
    const paid = (await postCharge(ctx, auth, newKey())).body;
    const chargeText = (await request(ctx.app).get(`/v1/charges/${paid.id}`).set(auth)).text;
    const refund = (await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: paid.id, amount: 400 })).body;
    const refundText = (await request(ctx.app).get(`/v1/refunds/${refund.id}`).set(auth)).text;
    const refundedText = (await request(ctx.app).get(`/v1/charges/${paid.id}`).set(auth)).text;
    expect(JSON.parse(refundedText)).toMatchObject({ amount_refunded: 400, refunded: false });
    const events = (await request(ctx.app).get('/v1/events').set(auth)).body.data as { id: string; type: string }[];
    for (const [type, objectText] of [
      ['charge.succeeded', chargeText],
      ['refund.succeeded', refundText],
      // Written by the refund's claiming statement, the charge built by the statement (chargeJson).
      ['charge.refunded', refundedText],
    ] as const) {
      const event = events.find((e) => e.type === type)!;
      // The event as served (and as every delivery carries it), not as a client's parser rebuilt it.
      const eventText = (await request(ctx.app).get(`/v1/events/${event.id}`).set(auth)).text;
      expect(eventText, type).toContain(`"data":{"object":${objectText}}`);
    }
  });

  it('records charge.pending with the 202, and charge.succeeded once when the worker settles it, also with two workers racing', async () => {
    ctx = await createTestContext({ ...FAST_JOBS, SETTLE_RETRY_DELAY_SECONDS: '1' });
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const pending = [];
    for (let i = 0; i < 8; i++) {
      const res = await postCharge(ctx, auth, newKey());
      expect(res.status).toBe(202);
      pending.push(res.body.id as string);
    }
    for (const id of pending) expect(await eventsOf(ctx, id)).toEqual(['charge.pending']);

    // Two worker processes' worth of loops on the same database, both after the same settle jobs.
    const second = await buildApp({ pool: ctx.t.pool }, { PROCESSOR_URL: ctx.simulator.url, ...FAST_JOBS });
    try {
      await ctx.startWorker();
      const otherWorker = second.service.worker();
      await otherWorker.start();
      await ctx.setChaos({ mode: 'healthy' });
      await expect
        .poll(async () => (await sql<{ n: number }>`select count(*)::int as n from charges where status = 'pending'`.execute(ctx!.t.db)).rows[0]!.n, {
          timeout: 20_000,
          interval: 200,
        })
        .toBe(0);
      await otherWorker.stop();
    } finally {
      await second.close();
    }
    for (const id of pending) expect(await eventsOf(ctx, id)).toEqual(['charge.pending', 'charge.succeeded']);
  });

  it('writes no event and no delivery when the change rolls back', async () => {
    ctx = await createTestContext({ ...FAST_JOBS });
    const { account, auth } = await ctx.account();
    await ctx.t.db
      .insertInto('webhook_endpoints')
      .values({ id: 'we_rollback', account_id: account.id, url: 'https://93.184.215.14/hooks', enabled_events: ['*'], secret_ciphertext: 'unused' })
      .execute();
    await ctx.setChaos({ mode: 'down' });
    const pending = (await postCharge(ctx, auth, newKey())).body;
    const before = (await sql<{ n: number }>`select count(*)::int as n from events`.execute(ctx.t.db)).rows[0]!.n;
    const key = await ctx.t.db.selectFrom('charges').select('idempotency_key_id').where('id', '=', pending.id).executeTakeFirstOrThrow();
    const { payments } = ctx.services;

    // The processor's answer recorded, then the transaction fails after it.
    await expect(
      inTransaction(ctx.t.db, async (trx) => {
        const response = await payments.record(trx, chargePayments, key.idempotency_key_id!, { kind: 'approved', reference: 'ch_proc_rolled_back' });
        expect(response.status).toBe(201);
        expect((await sql<{ n: number }>`select count(*)::int as n from events`.execute(trx)).rows[0]!.n).toBe(before + 1);
        throw new Error('rolled back after the change');
      }),
    ).rejects.toThrow('rolled back after the change');

    expect((await sql<{ n: number }>`select count(*)::int as n from events`.execute(ctx.t.db)).rows[0]!.n).toBe(before);
    expect(await eventsOf(ctx, pending.id)).toEqual(['charge.pending']);
    const deliveries = await sql<{ n: number }>`
      select count(*)::int as n from webhook_deliveries d join events e on e.id = d.event_id where e.type <> 'charge.pending'`.execute(ctx.t.db);
    expect(deliveries.rows[0]!.n).toBe(0);
    const jobs = await sql<{ n: number }>`select count(*)::int as n from pgboss.job where name = 'webhook'`.execute(ctx.t.db);
    expect(jobs.rows[0]!.n).toBe(1); // the charge.pending delivery's only
    expect((await request(ctx.app).get(`/v1/charges/${pending.id}`).set(auth)).body.status).toBe('pending');
  });

  it('a charge finishing while its account deletes an endpoint waits for the delete, then writes its event without that delivery', async () => {
    ctx = shared;
    const { account, auth } = await ctx.account();
    await ctx.t.db
      .insertInto('webhook_endpoints')
      .values({ id: 'we_deleted', account_id: account.id, url: 'https://93.184.215.14/hooks', enabled_events: ['*'], secret_ciphertext: 'unused' })
      .execute();
    const deleting = await ctx.t.pool.connect();
    try {
      await deleting.query('begin');
      await deleting.query(`delete from webhook_endpoints where id = 'we_deleted'`);
      const charging = postCharge(ctx, auth, newKey()).then((r) => r);
      // The charge's statement waits on the endpoint row the uncommitted delete holds.
      await expect
        .poll(async () => (await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`.execute(ctx!.t.db)).rows[0]!.n, {
          timeout: 5000,
          interval: 20,
        })
        .toBe(1);
      await deleting.query('commit');
      const res = await charging;
      expect(res.status).toBe(201);
      expect(await eventsOf(ctx, res.body.id)).toEqual(['charge.succeeded']);
      const deliveries = sql<{ n: number }>`
        select count(*)::int as n from webhook_deliveries where event_id in (select id from events where account_id = ${account.id})`;
      expect((await deliveries.execute(ctx.t.db)).rows[0]!.n).toBe(0);
    } finally {
      deleting.release();
    }
  });

  it('shows an account only its own events', async () => {
    ctx = shared;
    const mine = await ctx.account();
    const theirs = await ctx.account();
    await postCharge(ctx, mine.auth, newKey());
    const [event] = (await request(ctx.app).get('/v1/events').set(mine.auth)).body.data;
    expect(event.type).toBe('charge.succeeded');
    expect((await request(ctx.app).get('/v1/events').set(theirs.auth)).body.data).toEqual([]);
    expectProblem(await request(ctx.app).get(`/v1/events/${event.id}`).set(theirs.auth), 404, 'not_found');
    expectProblem(await request(ctx.app).get(`/v1/events/${event.id}/deliveries`).set(theirs.auth), 404, 'not_found');
    expectProblem(await request(ctx.app).get(`/v1/events?starting_after=${event.id}`).set(theirs.auth), 400, 'validation_failed');
  });
});
