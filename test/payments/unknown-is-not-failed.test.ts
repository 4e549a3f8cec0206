// Unknown is not failed: a payment the processor may have made is looked up, never declared failed; one it
// never saw is voided first. Each case is caused for real on the simulator, and checked against its ledger.
import { sql } from 'kysely';
import request from 'supertest';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chargePayments } from '../../src/charges/charges.service.ts';
import { refundPayments } from '../../src/refunds/refunds.service.ts';
import type { Worker } from '../../src/worker.ts';
import {
  charge,
  createTestContext,
  FAST_JOBS,
  ledgerFor,
  metricValue,
  newKey,
  postCharge,
  processorKeyFor,
  processorKeyOf,
  readCharge,
  type TestContext,
} from '../helpers/context.ts';
import { leaveAbandonedCharge } from '../helpers/factories.ts';

const POLL = { timeout: 30_000, interval: 200 };
/** Longer than a poll, so a payment that never settles fails on the poll's message, not the test's timeout. */
const TEST_TIMEOUT_MS = 3 * POLL.timeout;

/** Polls the payment until `until` holds, keeping every status it was seen in. */
async function watch(read: () => Promise<{ status: string }>, until: (p: { status: string }) => boolean) {
  const seen = new Set<string>();
  await expect
    .poll(async () => {
      const payment = await read();
      seen.add(payment.status);
      return until(payment);
    }, POLL)
    .toBe(true);
  return seen;
}

const flagged = async (ctx: TestContext, table: 'charges' | 'refunds', id: string) =>
  (await ctx.t.db.selectFrom(table as 'charges').select('reconcile_since').where('id', '=', id).executeTakeFirstOrThrow())
    .reconcile_since !== null;

/** True once the payment is older than the settle window by the database clock. */
const windowOver = async (ctx: TestContext, table: 'charges' | 'refunds', id: string, seconds: number) => {
  const { rows } = await sql<{ over: boolean }>`
    select created_at <= now() - make_interval(secs => ${seconds}) as over from ${sql.table(table)} where id = ${id}`.execute(
    ctx.t.db,
  );
  return rows[0]!.over;
};

/**
 * A describe's worker, which a test pauses while it sets the processor up: a settle job is fetched as soon
 * as its 202 commits, and one run before the processor is taken down would settle the payment (its resend
 * answered from the processor's memory) instead of meeting the failure under test. afterEach resumes it.
 */
function pausableWorker(ctx: () => TestContext) {
  let worker: Worker | undefined;
  return {
    resume: async () => {
      worker ??= await ctx().startWorker();
    },
    pause: async () => {
      await worker?.stop();
      worker = undefined;
    },
  };
}

describe('a settle window that ends without an answer', { timeout: TEST_TIMEOUT_MS }, () => {
  const WINDOW = 3;
  let ctx: TestContext;
  const worker = pausableWorker(() => ctx);
  beforeAll(async () => {
    ctx = await createTestContext({ ...FAST_JOBS, SETTLE_WINDOW_SECONDS: String(WINDOW) });
    await worker.resume();
  });
  afterEach(async () => {
    await ctx.setChaos({ mode: 'healthy' });
    await worker.resume();
  });
  afterAll(() => ctx.destroy());

  it('leaves a charge the processor made but whose answer was lost pending, flagged and shown, then records it succeeded through the lookup', async () => {
    const { auth } = await ctx.account();
    await worker.pause();
    await ctx.setChaos({ mode: 'lose_response' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);
    const key = await processorKeyOf(ctx, 'charges', res.body.id);
    expect(ledgerFor((await ctx.ledger()).entries, key)).toHaveLength(1);

    // The processor stays down past the window: nobody can say what became of the charge.
    await ctx.setChaos({ mode: 'down' });
    await worker.resume();
    await expect.poll(() => flagged(ctx, 'charges', res.body.id), POLL).toBe(true);
    expect((await readCharge(ctx, auth, res.body.id)).status).toBe('pending');
    expect(await metricValue(ctx, 'payments_awaiting_reconciliation')).toBe(1);
    expect(await metricValue(ctx, 'payments_oldest_pending_age_seconds')).toBeGreaterThan(0);
    await expect
      .poll(async () => (await request(ctx.app).get('/health')).body.checks['payments:awaitingReconciliation'][0], POLL)
      .toMatchObject({ status: 'warn', observedValue: 1 });

    await ctx.setChaos({ mode: 'healthy' });
    const seen = await watch(
      () => readCharge(ctx, auth, res.body.id),
      (c) => c.status !== 'pending',
    );
    expect(seen).not.toContain('failed');
    const settled = await readCharge(ctx, auth, res.body.id);
    const entries = ledgerFor((await ctx.ledger()).entries, key);
    expect(settled).toMatchObject({ status: 'succeeded', processor_reference: entries[0]!.id });
    expect(entries).toHaveLength(1);
    expect((await ctx.ledger()).requests.lookups).toBeGreaterThan(0);
    expect(await flagged(ctx, 'charges', res.body.id)).toBe(false);
    expect(await metricValue(ctx, 'payments_awaiting_reconciliation')).toBe(0);
  });

  it('voids a key the processor never saw before failing the charge, so a late request with it is refused and the merchant’s new charge is the only one', async () => {
    const { account, auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);
    const key = await processorKeyOf(ctx, 'charges', res.body.id);
    // Past the window the worker stops sending and asks; the processor being down, it flags the charge.
    await expect.poll(() => flagged(ctx, 'charges', res.body.id), POLL).toBe(true);
    expect(await windowOver(ctx, 'charges', res.body.id, WINDOW)).toBe(true);

    await ctx.setChaos({ mode: 'healthy' });
    await watch(
      () => readCharge(ctx, auth, res.body.id),
      (c) => c.status !== 'pending',
    );
    const failed = await readCharge(ctx, auth, res.body.id);
    expect(failed).toMatchObject({ status: 'failed', failure_code: 'processor_unavailable', processor_reference: null });
    const ledger = await ctx.ledger();
    expect(ledger.voided).toContainEqual({ type: 'charge', idempotency_key: key });
    expect(ledgerFor(ledger.entries, key)).toHaveLength(0);

    // A request of ours still on its way with that key can never charge now.
    const late = await request(ctx.simulator.url)
      .post('/charges')
      .set('Idempotency-Key', key)
      .send({ amount: 1000, currency: 'usd', source: 'tok_visa' });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('idempotency_key_voided');
    expect(ledgerFor((await ctx.ledger()).entries, key)).toHaveLength(0);

    const again = await postCharge(ctx, auth, newKey());
    expect(again.status).toBe(201);
    const rows = await ctx.t.db.selectFrom('charges').selectAll().where('account_id', '=', account.id).execute();
    const charged = (await ctx.ledger()).entries.filter((e) => rows.some((r) => r.processor_idempotency_key === e.idempotency_key));
    expect(charged.map((e) => e.id)).toEqual([again.body.processor_reference]);
    // A final status never changes again.
    expect((await readCharge(ctx, auth, res.body.id)).status).toBe('failed');
  });

  it('keeps a refund whose answer was lost pending and its amount held, then records it succeeded through the lookup', async () => {
    const { auth } = await ctx.account();
    const created = await postCharge(ctx, auth, newKey(), { amount: 1000, currency: 'usd', source: 'tok_visa' });
    expect(created.status).toBe(201);
    await worker.pause();
    await ctx.setChaos({ mode: 'lose_response' });
    const refund = await request(ctx.app)
      .post('/v1/refunds')
      .set(auth)
      .set('Idempotency-Key', newKey())
      .send({ charge: created.body.id, amount: 300 });
    expect(refund.status).toBe(202);
    await ctx.setChaos({ mode: 'down' });
    await worker.resume();
    await expect.poll(() => flagged(ctx, 'refunds', refund.body.id), POLL).toBe(true);
    const readRefund = async () => (await request(ctx.app).get(`/v1/refunds/${refund.body.id}`).set(auth)).body;
    expect((await readRefund()).status).toBe('pending');
    expect((await readCharge(ctx, auth, created.body.id)).amount_refunded).toBe(300);

    await ctx.setChaos({ mode: 'healthy' });
    const seen = await watch(readRefund, (r) => r.status !== 'pending');
    expect(seen).not.toContain('failed');
    const key = await processorKeyOf(ctx, 'refunds', refund.body.id);
    const entries = ledgerFor((await ctx.ledger()).entries, key);
    expect(entries).toHaveLength(1);
    expect(await readRefund()).toMatchObject({ status: 'succeeded', processor_reference: entries[0]!.id });
    expect((await readCharge(ctx, auth, created.body.id)).amount_refunded).toBe(300);
  });

  it('voids a refund the processor never saw, then fails it and gives its amount back', async () => {
    const { auth } = await ctx.account();
    const created = await postCharge(ctx, auth, newKey(), { amount: 1000, currency: 'usd', source: 'tok_visa' });
    await ctx.setChaos({ mode: 'down' });
    const refund = await request(ctx.app)
      .post('/v1/refunds')
      .set(auth)
      .set('Idempotency-Key', newKey())
      .send({ charge: created.body.id, amount: 400 });
    expect(refund.status).toBe(202);
    await expect.poll(() => flagged(ctx, 'refunds', refund.body.id), POLL).toBe(true);
    expect((await readCharge(ctx, auth, created.body.id)).amount_refunded).toBe(400);

    await ctx.setChaos({ mode: 'healthy' });
    const readRefund = async () => (await request(ctx.app).get(`/v1/refunds/${refund.body.id}`).set(auth)).body;
    await watch(readRefund, (r) => r.status !== 'pending');
    expect(await readRefund()).toMatchObject({ status: 'failed', failure_code: 'processor_unavailable' });
    const key = await processorKeyOf(ctx, 'refunds', refund.body.id);
    expect((await ctx.ledger()).voided).toContainEqual({ type: 'refund', idempotency_key: key });
    const chargeText = (await request(ctx.app).get(`/v1/charges/${created.body.id}`).set(auth)).text;
    expect(JSON.parse(chargeText).amount_refunded).toBe(0);
    // The charge's own events: refunded when the refund held 400 of it, updated when it gave them back,
    // the latter carrying the charge as GET answers it now, byte for byte.
    const events = (await request(ctx.app).get('/v1/events').set(auth)).body.data as { id: string; type: string; data: { object: { id: string; amount_refunded: number } } }[];
    const ofCharge = events.filter((e) => e.data.object.id === created.body.id);
    expect(ofCharge.map((e) => [e.type, e.data.object.amount_refunded])).toEqual([
      ['charge.updated', 0],
      ['charge.refunded', 400],
      ['charge.succeeded', 0],
    ]);
    const updated = (await request(ctx.app).get(`/v1/events/${ofCharge[0]!.id}`).set(auth)).text;
    expect(updated).toContain(`"data":{"object":${chargeText}}`);
  });
});

describe('a processor reference another payment already holds', { timeout: TEST_TIMEOUT_MS }, () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext(FAST_JOBS);
  });
  afterEach(() => ctx.setChaos({ mode: 'healthy' }));
  afterAll(() => ctx.destroy());

  /** Makes charge `holder` hold the reference the processor gave for `processorKey`: an anomaly. */
  async function collide(holder: string, processorKey: string) {
    const [entry] = ledgerFor((await ctx.ledger()).entries, processorKey);
    await ctx.t.db.updateTable('charges').set({ processor_reference: entry!.id }).where('id', '=', holder).execute();
    return entry!.id;
  }

  it('answers 202 and leaves the charge pending for reconciliation when a request meets it, never a 500', async () => {
    const { account, auth } = await ctx.account();
    const holder = await postCharge(ctx, auth, newKey());
    expect(holder.status).toBe(201);
    // A request that died after phase 1, whose charge the processor made meanwhile.
    const key = newKey();
    const { keyId, chargeId } = await leaveAbandonedCharge(ctx.t.db, { accountId: account.id, key, body: charge(), lockedSecondsAgo: 3600 });
    const processorKey = processorKeyFor('charge', keyId);
    await request(ctx.simulator.url).post('/charges').set('Idempotency-Key', processorKey).send(charge()).expect(200);
    await collide(holder.body.id, processorKey);

    const retried = await postCharge(ctx, auth, key);
    expect(retried.status).toBe(202);
    expect(retried.body).toMatchObject({ id: chargeId, status: 'pending' });
    expect(await flagged(ctx, 'charges', chargeId)).toBe(true);
    expect(ctx.logs.lines.some((l) => l.level === 50 && l.id === chargeId && String(l.msg).startsWith('anomaly'))).toBe(true);
    expect(await metricValue(ctx, 'payments_awaiting_reconciliation')).toBeGreaterThanOrEqual(1);
  });

  it('leaves a settling charge pending and flagged, and the settle job says so', async () => {
    const { auth } = await ctx.account();
    const holder = await postCharge(ctx, auth, newKey());
    await ctx.setChaos({ mode: 'lose_response' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);
    await ctx.setChaos({ mode: 'healthy' });
    await collide(holder.body.id, await processorKeyOf(ctx, 'charges', res.body.id));

    const result = await ctx.services.payments.settle(chargePayments, res.body.id, { lastAttempt: false, deadline: Date.now() + 5000 });
    expect(result).toBe('awaiting_reconciliation');
    expect((await readCharge(ctx, auth, res.body.id)).status).toBe('pending');
    expect(await flagged(ctx, 'charges', res.body.id)).toBe(true);
  });
});

describe('a processor that refuses a resend', { timeout: TEST_TIMEOUT_MS }, () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext(FAST_JOBS);
  });
  afterEach(async () => {
    await ctx.setChaos({ mode: 'healthy' });
    await request(ctx.simulator.url).put('/retention').send({ seconds: null }).expect(200);
  });
  afterAll(() => ctx.destroy());

  it('looks a refund up when the processor refuses to pay it again, and records the refund it already paid', async () => {
    const { auth } = await ctx.account();
    const charged = await postCharge(ctx, auth, newKey(), { amount: 1000, currency: 'usd', source: 'tok_visa' });
    // The processor forgets keys far sooner than we were told (at once): a resend is then a new refund of a
    // charge already refunded in full, which it refuses.
    await request(ctx.simulator.url).put('/retention').send({ seconds: 0 }).expect(200);
    await ctx.setChaos({ mode: 'lose_response' });
    const refund = await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: charged.body.id });
    expect(refund.status).toBe(202);
    await ctx.setChaos({ mode: 'healthy' });

    const before = (await ctx.ledger()).requests;
    const result = await ctx.services.payments.settle(refundPayments, refund.body.id, { lastAttempt: false, deadline: Date.now() + 5000 });
    // One resend, refused, then the lookup that found the refund it had paid (a resend answered from the
    // processor's memory would have needed no lookup).
    const after = (await ctx.ledger()).requests;
    expect({ refunds: after.refunds - before.refunds, lookups: after.lookups - before.lookups }).toEqual({ refunds: 1, lookups: 1 });
    expect(result).toBe('settled');
    const key = await processorKeyOf(ctx, 'refunds', refund.body.id);
    const entries = ledgerFor((await ctx.ledger()).entries, key);
    expect(entries).toHaveLength(1);
    const read = (await request(ctx.app).get(`/v1/refunds/${refund.body.id}`).set(auth)).body;
    expect(read).toMatchObject({ status: 'succeeded', processor_reference: entries[0]!.id });
    expect((await readCharge(ctx, auth, charged.body.id)).amount_refunded).toBe(1000);
  });
});

describe('a processor that forgets keys', { timeout: TEST_TIMEOUT_MS }, () => {
  let ctx: TestContext;
  const worker = pausableWorker(() => ctx);
  beforeAll(async () => {
    ctx = await createTestContext({ ...FAST_JOBS, SETTLE_WINDOW_SECONDS: '3600', PROCESSOR_KEY_RETENTION_SECONDS: '1' });
    await worker.resume();
  });
  afterEach(async () => {
    await ctx.setChaos({ mode: 'healthy' });
    await worker.resume();
  });
  afterAll(() => ctx.destroy());

  it('looks a payment up instead of resending it once the processor may have forgotten its key, and never charges twice', async () => {
    const { auth } = await ctx.account();
    await request(ctx.simulator.url).put('/retention').send({ seconds: 1 }).expect(200);
    await worker.pause();
    await ctx.setChaos({ mode: 'lose_response' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);
    const key = await processorKeyOf(ctx, 'charges', res.body.id);
    await ctx.setChaos({ mode: 'down' });
    await worker.resume();
    // Past both retentions the processor has forgotten the key, and we may know it has. Wait for a settle
    // attempt that began after that (answered 503 while the processor is down), then bring it back.
    await expect.poll(() => windowOver(ctx, 'charges', res.body.id, 1.5), POLL).toBe(true);
    const asked = async () => {
      const { requests } = await ctx.ledger();
      return requests.charges + requests.lookups;
    };
    const before = await asked();
    await expect.poll(asked, POLL).toBeGreaterThan(before);

    await ctx.setChaos({ mode: 'healthy' });
    await watch(
      () => readCharge(ctx, auth, res.body.id),
      (c) => c.status !== 'pending',
    );
    const entries = ledgerFor((await ctx.ledger()).entries, key);
    expect(entries).toHaveLength(1);
    expect(await readCharge(ctx, auth, res.body.id)).toMatchObject({ status: 'succeeded', processor_reference: entries[0]!.id });
  });
});

describe('the sweep', { timeout: TEST_TIMEOUT_MS }, () => {
  let ctx: TestContext;
  let worker: Worker;
  beforeAll(async () => {
    ctx = await createTestContext({ ...FAST_JOBS, SETTLE_MAX_ATTEMPTS: '1' });
    worker = await ctx.startWorker();
  });
  afterEach(() => ctx.setChaos({ mode: 'healthy' }));
  afterAll(() => ctx.destroy());

  it('counts a job dead-lettered by an unexpected error on its last attempt, drives its charge again, and it settles once', async () => {
    const { auth } = await ctx.account();
    // Its only settle attempt must meet a processor that answers, or the charge goes the way of a payment
    // the processor never saw (looked up, voided, failed): no worker runs until the processor is back.
    await worker.stop();
    await ctx.setChaos({ mode: 'down' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);
    // The first attempt to record the answer fails as a database bug would; later ones go through.
    await sql`create sequence settle_faults`.execute(ctx.t.db);
    await sql`
      create function fail_first_settle() returns trigger language plpgsql as $$
      begin
        if new.id = ${sql.lit(res.body.id)} and new.status <> 'pending' and nextval('settle_faults') = 1 then
          raise exception 'unexpected fault injected by the test';
        end if;
        return new;
      end $$`.execute(ctx.t.db);
    await sql`create trigger fail_first_settle before update on charges for each row execute function fail_first_settle()`.execute(
      ctx.t.db,
    );
    try {
      const before = await metricValue(ctx, 'settle_dead_letters_total{kind="charge"}');
      await ctx.setChaos({ mode: 'healthy' });
      worker = await ctx.startWorker();
      await watch(
        () => readCharge(ctx, auth, res.body.id),
        (c) => c.status !== 'pending',
      );
      const key = await processorKeyOf(ctx, 'charges', res.body.id);
      const entries = ledgerFor((await ctx.ledger()).entries, key);
      expect(entries).toHaveLength(1);
      expect(await readCharge(ctx, auth, res.body.id)).toMatchObject({ status: 'succeeded', processor_reference: entries[0]!.id });
      const { rows } = await sql<{ n: number }>`select currval('settle_faults')::int as n`.execute(ctx.t.db).catch(async () =>
        sql<{ n: number }>`select last_value::int as n from settle_faults`.execute(ctx.t.db),
      );
      expect(rows[0]!.n).toBeGreaterThanOrEqual(2);
      expect(await metricValue(ctx, 'settle_dead_letters_total{kind="charge"}')).toBe(before + 1);
      expect(ctx.logs.lines.some((l) => l.level === 50 && l.id === res.body.id && String(l.msg).includes('dead-lettered'))).toBe(true);
    } finally {
      await sql`drop trigger if exists fail_first_settle on charges`.execute(ctx.t.db);
    }
  });

  it('gives a pending charge whose job was deleted by hand a new one', async () => {
    const { auth } = await ctx.account();
    // As above: the job is deleted before any worker can run it, and the only settle attempt meets a
    // processor that answers.
    await worker.stop();
    await ctx.setChaos({ mode: 'down' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);
    const before = await metricValue(ctx, 'sweep_redriven_total{kind="charge"}');
    await sql`delete from pgboss.job where singleton_key = ${`charge:${res.body.id}`}`.execute(ctx.t.db);
    await ctx.setChaos({ mode: 'healthy' });
    worker = await ctx.startWorker();
    await watch(
      () => readCharge(ctx, auth, res.body.id),
      (c) => c.status !== 'pending',
    );
    expect((await readCharge(ctx, auth, res.body.id)).status).toBe('succeeded');
    expect(await metricValue(ctx, 'sweep_redriven_total{kind="charge"}')).toBe(before + 1);
  });
});
