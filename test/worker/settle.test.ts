// Outages become delays: pending charges settled by the worker, the operator's redrive, atomicity.
import { spawnSync } from 'node:child_process';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestContext,
  FAST_JOBS,
  ledgerFor,
  newKey,
  postCharge,
  processorKeyOf,
  readCharge,
  type TestContext,
} from '../helpers/context.ts';

const settleJobsFor = async (ctx: TestContext, queue: string, id: string) => {
  const { rows } = await sql<{ state: string }>`
    select state from pgboss.job where name = ${queue} and data->>'id' = ${id}`.execute(ctx.t.db);
  return rows;
};


/** Runs the operator's command, `npm run jobs:retry-dead`, against this test's database; returns what it printed. */
function retryDeadJobs(ctx: TestContext): string {
  const run = spawnSync(process.execPath, ['src/cli/jobs-retry-dead.ts'], {
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
    // While the processor stays down the charge stays pending, however often it is asked: an outage is a delay.
    const asked = (await ctx.ledger()).requests.charges;
    await expect.poll(async () => (await ctx.ledger()).requests.charges, { timeout: 20_000, interval: 100 }).toBeGreaterThan(asked + 1);
    expect((await readCharge(ctx, auth, res.body.id)).status).toBe('pending');

    await ctx.setChaos({ mode: 'healthy' });
    await expect
      .poll(async () => (await readCharge(ctx, auth, res.body.id)).status, { timeout: 20_000, interval: 200 })
      .toBe('succeeded');
    const settled = await readCharge(ctx, auth, res.body.id);
    const entries = ledgerFor((await ctx.ledger()).entries, await processorKeyOf(ctx, 'charges', res.body.id));
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

describe('npm run jobs:retry-dead', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({ PROCESSOR_MAX_ATTEMPTS: '1' });
  });
  afterAll(() => ctx.destroy());

  it('gives a dead letter’s payment a live settle job again, for an operator who will not wait for the sweep', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const res = await postCharge(ctx, auth, newKey());
    await ctx.setChaos({ mode: 'healthy' });
    expect(res.status).toBe(202);
    // What pg-boss leaves when a job spends its attempts on errors: the job gone, a dead letter in its place.
    await sql`delete from pgboss.job where name = 'settle' and data->>'id' = ${res.body.id}`.execute(ctx.t.db);
    await ctx.boss.send('settle-dead', { kind: 'charge', id: res.body.id });
    expect(retryDeadJobs(ctx)).toMatch(/moved 1 dead-lettered job/);
    expect(await settleJobsFor(ctx, 'settle', res.body.id)).toEqual([{ state: 'created' }]);
    expect(await settleJobsFor(ctx, 'settle-dead', res.body.id)).toEqual([{ state: 'completed' }]);
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
