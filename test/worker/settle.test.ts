// Outages become delays: pending charges settled by the worker, dead letters, their redrive, atomicity.
import { spawnSync } from 'node:child_process';
import { sql } from 'kysely';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestContext,
  ledgerFor,
  newKey,
  postCharge,
  readCharge,
  type TestContext,
} from '../helpers/context.ts';

const FAST_JOBS = {
  PROCESSOR_MAX_ATTEMPTS: '1',
  JOB_POLL_INTERVAL_SECONDS: '0.5',
  SETTLE_RETRY_DELAY_SECONDS: '1',
  SETTLE_RETRY_DELAY_MAX_SECONDS: '1',
  COMPLETER_INTERVAL_SECONDS: '1',
};

const settleJobsFor = async (ctx: TestContext, queue: string, id: string) => {
  const { rows } = await sql<{ state: string }>`
    select state from pgboss.job where name = ${queue} and data->>'id' = ${id}`.execute(ctx.t.db);
  return rows;
};

const processorKeyOf = async (ctx: TestContext, chargeId: string) =>
  (
    await ctx.t.db
      .selectFrom('charges')
      .select('processor_idempotency_key')
      .where('id', '=', chargeId)
      .executeTakeFirstOrThrow()
  ).processor_idempotency_key;

/** Runs the operator's command, `npm run jobs:retry-dead`, against this test's database; returns what it printed. */
function retryDeadJobs(ctx: TestContext): string {
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/jobs-retry-dead.ts'], {
    env: { ...process.env, DATABASE_URL: ctx.t.url },
    encoding: 'utf8',
    timeout: 30_000,
  });
  expect(run.status, run.stderr).toBe(0);
  return run.stdout;
}

describe('settling pending charges', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({ ...FAST_JOBS, SETTLE_MAX_ATTEMPTS: '50' });
    await ctx.startWorker();
  });
  afterAll(() => ctx.destroy());

  it('settles a 202 pending charge to succeeded once the processor is back, charging once', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);
    expect(await settleJobsFor(ctx, 'settle', res.body.id)).toHaveLength(1);
    // While the processor stays down the charge stays pending: an outage is a delay.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await readCharge(ctx, auth, res.body.id)).status).toBe('pending');

    await ctx.setChaos({ mode: 'healthy' });
    await expect
      .poll(async () => (await readCharge(ctx, auth, res.body.id)).status, { timeout: 20_000, interval: 200 })
      .toBe('succeeded');
    const settled = await readCharge(ctx, auth, res.body.id);
    const entries = ledgerFor((await ctx.ledger()).entries, await processorKeyOf(ctx, res.body.id));
    expect(entries).toHaveLength(1);
    expect(settled.processor_reference).toBe(entries[0]!.id);
  });

  it('settles a pending charge whose card is declined to failed with the decline code', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const res = await postCharge(ctx, auth, newKey(), { amount: 700, currency: 'usd', source: 'tok_expiredCard' });
    expect(res.status).toBe(202);
    await ctx.setChaos({ mode: 'healthy' });
    await expect
      .poll(async () => (await readCharge(ctx, auth, res.body.id)).status, { timeout: 20_000, interval: 200 })
      .toBe('failed');
    expect((await readCharge(ctx, auth, res.body.id)).failure_code).toBe('expired_card');
  });
});

describe('a processor down past the settle budget', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({ ...FAST_JOBS, SETTLE_MAX_ATTEMPTS: '2' });
    await ctx.startWorker();
  });
  afterAll(() => ctx.destroy());

  it('dead-letters the job, fails the charge with processor_unavailable, and jobs:retry-dead settles it after recovery', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const res = await postCharge(ctx, auth, newKey());
    expect(res.status).toBe(202);

    await expect
      .poll(async () => (await readCharge(ctx, auth, res.body.id)).status, { timeout: 20_000, interval: 200 })
      .toBe('failed');
    const failed = await readCharge(ctx, auth, res.body.id);
    expect(failed.failure_code).toBe('processor_unavailable');
    expect(await settleJobsFor(ctx, 'settle-dead', res.body.id)).toHaveLength(1);
    expect(
      ctx.logs.lines.some((l) => l.level === 50 && String(l.msg).startsWith(`settle job dead-lettered: charge ${res.body.id}`)),
    ).toBe(true);
    const metrics = await request(ctx.app).get('/metrics');
    expect(metrics.text).toMatch(/^settle_dead_letters_total\{kind="charge"\} 1$/m);

    await ctx.setChaos({ mode: 'healthy' });
    expect(retryDeadJobs(ctx)).toMatch(/moved 1 dead-lettered settle job/);

    await expect
      .poll(async () => (await readCharge(ctx, auth, res.body.id)).status, { timeout: 20_000, interval: 200 })
      .toBe('succeeded');
    const entries = ledgerFor((await ctx.ledger()).entries, await processorKeyOf(ctx, res.body.id));
    expect(entries).toHaveLength(1);
    expect((await readCharge(ctx, auth, res.body.id)).failure_code).toBeNull();
  });
  it('gives up on a refund without giving its amount back, and settles it once after a redrive', async () => {
    const { auth } = await ctx.account();
    const created = await postCharge(ctx, auth, newKey(), { amount: 1000, currency: 'usd', source: 'tok_visa' });
    expect(created.status).toBe(201);
    await ctx.setChaos({ mode: 'down' });
    const refund = await request(ctx.app)
      .post('/v1/refunds')
      .set(auth)
      .set('Idempotency-Key', newKey())
      .send({ charge: created.body.id, amount: 400 });
    expect(refund.status).toBe(202);
    const readRefund = async () => (await request(ctx.app).get(`/v1/refunds/${refund.body.id}`).set(auth)).body;
    await expect.poll(async () => (await readRefund()).status, { timeout: 20_000, interval: 200 }).toBe('failed');
    expect((await readRefund()).failure_code).toBe('processor_unavailable');
    // The processor may have paid it: the 400 stays held, so nobody can refund past the charge meanwhile.
    expect((await readCharge(ctx, auth, created.body.id)).amount_refunded).toBe(400);

    await ctx.setChaos({ mode: 'healthy' });
    expect(retryDeadJobs(ctx)).toMatch(/moved 1 dead-lettered settle job/);
    await expect.poll(async () => (await readRefund()).status, { timeout: 20_000, interval: 200 }).toBe('succeeded');
    const row = await ctx.t.db
      .selectFrom('refunds')
      .select('processor_idempotency_key')
      .where('id', '=', refund.body.id)
      .executeTakeFirstOrThrow();
    expect(ledgerFor((await ctx.ledger()).entries, row.processor_idempotency_key)).toHaveLength(1);
    expect((await readCharge(ctx, auth, created.body.id)).amount_refunded).toBe(400);
  });
});

describe('the transaction that leaves a charge pending', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({ PROCESSOR_MAX_ATTEMPTS: '1' });
  });
  afterAll(() => ctx.destroy());

  it('stores the 202 and enqueues the settle job together: when the enqueue fails, neither exists', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    await sql`
      create function refuse_settle_jobs() returns trigger language plpgsql as $$
      begin
        if new.name = 'settle' then raise exception 'settle job refused by test trigger'; end if;
        return new;
      end $$`.execute(ctx.t.db);
    await sql`create trigger refuse_settle_jobs before insert on pgboss.job
              for each row execute function refuse_settle_jobs()`.execute(ctx.t.db);
    await ctx.setChaos({ mode: 'down' });
    try {
      const failed = await postCharge(ctx, auth, key);
      expect(failed.status).toBe(500);
      expect(failed.body.code).toBe('internal_error');
      expect(failed.text).not.toContain('test trigger');

      const keyRow = await ctx.t.db
        .selectFrom('idempotency_keys')
        .selectAll()
        .where('account_id', '=', account.id)
        .executeTakeFirstOrThrow();
      expect(keyRow).toMatchObject({ recovery_point: 'intent_recorded', response_status: null, locked_at: null });
      const charge = await ctx.t.db
        .selectFrom('charges')
        .selectAll()
        .where('idempotency_key_id', '=', keyRow.id)
        .executeTakeFirstOrThrow();
      expect(charge.status).toBe('pending');
      expect(await settleJobsFor(ctx, 'settle', charge.id)).toHaveLength(0);

      await sql`drop trigger refuse_settle_jobs on pgboss.job`.execute(ctx.t.db);
      const retried = await postCharge(ctx, auth, key);
      expect(retried.status).toBe(202);
      expect(retried.body.id).toBe(charge.id);
      expect(await settleJobsFor(ctx, 'settle', charge.id)).toHaveLength(1);
    } finally {
      await sql`drop trigger if exists refuse_settle_jobs on pgboss.job`.execute(ctx.t.db);
      await ctx.setChaos({ mode: 'healthy' });
    }
  });
});
