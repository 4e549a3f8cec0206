// The completer, the reaper, and several workers sharing one queue.
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compose } from '../../src/compose.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import type { Worker } from '../../src/worker.ts';
import { LogCapture } from '../helpers/app.ts';
import { leaveAbandonedCharge } from '../helpers/factories.ts';
import {
  charge,
  createTestContext,
  ledgerFor,
  newKey,
  postCharge,
  readCharge,
  type TestContext,
} from '../helpers/context.ts';

const abandonedCharge = (ctx: TestContext, accountId: string, key: string) =>
  leaveAbandonedCharge(ctx.t.db, { accountId, key, body: charge(), lockedSecondsAgo: 3600 });

describe('the completer', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({ COMPLETER_INTERVAL_SECONDS: '1', IDEMPOTENCY_LEASE_SECONDS: '2' });
    await ctx.startWorker();
  });
  afterAll(() => ctx.destroy());

  it('drives an abandoned request to its end with no client retry, and the client then gets the stored answer', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const { keyId, chargeId } = await abandonedCharge(ctx, account.id, key);
    await expect
      .poll(
        async () =>
          (await ctx.t.db.selectFrom('idempotency_keys').select('recovery_point').where('id', '=', keyId).executeTakeFirst())
            ?.recovery_point,
        { timeout: 15_000, interval: 200 },
      )
      .toBe('finished');
    expect((await readCharge(ctx, auth, chargeId)).status).toBe('succeeded');
    expect(ledgerFor((await ctx.ledger()).entries, `charge_${keyId}`)).toHaveLength(1);
    expect(ctx.logs.lines.some((l) => l.msg === 'completer finished an abandoned request' && l.key_id === keyId)).toBe(
      true,
    );
    const client = await postCharge(ctx, auth, key);
    expect(client.status).toBe(201);
    expect(client.headers['idempotent-replayed']).toBe('true');
    expect(client.body.id).toBe(chargeId);
  });

  it('finishes an abandoned request even after its key expired', async () => {
    const { account, auth } = await ctx.account();
    const { keyId, chargeId } = await abandonedCharge(ctx, account.id, newKey());
    await ctx.t.db
      .updateTable('idempotency_keys')
      .set({ expires_at: sql<Date>`now() - interval '1 minute'` })
      .where('id', '=', keyId)
      .execute();
    await expect
      .poll(async () => (await readCharge(ctx, auth, chargeId)).status, { timeout: 15_000, interval: 200 })
      .toBe('succeeded');
  });

  it('leaves alone a request whose lease is still held', async () => {
    const { account, auth } = await ctx.account();
    const { keyId } = await abandonedCharge(ctx, account.id, newKey());
    await ctx.t.db
      .updateTable('idempotency_keys')
      .set({ locked_at: sql<Date>`now() + interval '1 hour'` })
      .where('id', '=', keyId)
      .execute();
    // A control created after it, with its lease run out: once the completer has finished this one,
    // it has had a pass that saw both.
    const control = await abandonedCharge(ctx, account.id, newKey());
    await expect
      .poll(async () => (await readCharge(ctx, auth, control.chargeId)).status, { timeout: 15_000, interval: 200 })
      .toBe('succeeded');
    const row = await ctx.t.db
      .selectFrom('idempotency_keys')
      .select('recovery_point')
      .where('id', '=', keyId)
      .executeTakeFirstOrThrow();
    expect(row.recovery_point).toBe('intent_recorded');
    expect(ledgerFor((await ctx.ledger()).entries, `charge_${keyId}`)).toHaveLength(0);
  });
});

describe('the reaper', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({ REAPER_INTERVAL_SECONDS: '1', REAPER_BATCH_SIZE: '2' });
  });
  afterAll(() => ctx.destroy());

  it('deletes only expired, finished keys, in batches, keeping their charges', async () => {
    const { account, auth } = await ctx.account();
    // An accepted request that has not finished is never reaped, however old its key.
    const unfinished = await abandonedCharge(ctx, account.id, newKey());
    await ctx.t.db
      .updateTable('idempotency_keys')
      .set({ expires_at: sql<Date>`now() - interval '1 minute'`, locked_at: sql<Date>`now() + interval '1 hour'` })
      .where('id', '=', unfinished.keyId)
      .execute();
    const keys = Array.from({ length: 7 }, () => newKey());
    const charges = [];
    for (const key of keys) charges.push((await postCharge(ctx, auth, key)).body.id as string);
    const expired = keys.slice(0, 5);
    await ctx.t.db
      .updateTable('idempotency_keys')
      .set({ expires_at: sql<Date>`now() - interval '1 minute'` })
      .where('account_id', '=', account.id)
      .where('key', 'in', expired)
      .execute();

    await ctx.startWorker();
    const remaining = () =>
      ctx.t.db.selectFrom('idempotency_keys').select('key').where('account_id', '=', account.id).execute();
    await expect.poll(async () => (await remaining()).length, { timeout: 15_000, interval: 200 }).toBe(3);
    const left = (await remaining()).map((r) => r.key);
    expect(left).toEqual(expect.arrayContaining(keys.slice(5)));
    expect(left).toHaveLength(3);
    for (const id of charges) expect((await readCharge(ctx, auth, id)).status).toBe('succeeded');
    const passes = ctx.logs.lines.filter((l) => l.msg === 'reaper deleted expired idempotency keys');
    expect(passes.reduce((sum, l) => sum + Number(l.reaped), 0)).toBe(5);
    // Batches of REAPER_BATCH_SIZE (2): 5 keys take 3 statements.
    expect(passes.reduce((sum, l) => sum + Number(l.batches), 0)).toBeGreaterThanOrEqual(3);
  });
});

describe('several workers at once', () => {
  let ctx: TestContext;
  const workers: Worker[] = [];
  const closers: (() => Promise<void>)[] = [];
  const logs: LogCapture[] = [];
  beforeAll(async () => {
    ctx = await createTestContext({ PROCESSOR_MAX_ATTEMPTS: '1' });
  });
  afterAll(async () => {
    for (const w of workers) await w.stop();
    for (const c of closers) await c();
    await ctx.destroy();
  });

  it('settles each job once', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const ids: string[] = [];
    for (let i = 0; i < 12; i += 1) {
      const res = await postCharge(ctx, auth, newKey());
      expect(res.status).toBe(202);
      ids.push(res.body.id);
    }
    await ctx.setChaos({ mode: 'healthy' });
    const before = (await ctx.ledger()).requests.charges;

    // Attempts far longer than an answering processor takes on a busy machine: a timed-out one would be a
    // request more than the count below.
    // Two fetch loops each: jobs race within a worker as well as between them.
    const config = loadConfig({
      PROCESSOR_URL: ctx.simulator.url,
      JOB_CONCURRENCY: '2',
      JOB_POLL_INTERVAL_SECONDS: '0.5',
      PROCESSOR_ATTEMPT_TIMEOUT_MS: '4000',
    });
    for (let i = 0; i < 3; i += 1) {
      const capture = new LogCapture();
      logs.push(capture);
      const service = await compose({ config, pool: ctx.t.pool, logger: createLogger('info', capture), supervise: true });
      closers.push(() => service.close());
      const worker = service.worker();
      workers.push(worker);
    }
    await Promise.all(workers.map((w) => w.start()));

    await expect
      .poll(async () => (await ctx.t.db.selectFrom('charges').select('id').where('id', 'in', ids).where('status', '=', 'succeeded').execute()).length === ids.length, {
        timeout: 30_000,
        interval: 250,
      })
      .toBe(true);
    expect((await ctx.ledger()).requests.charges - before).toBe(ids.length);
    const settledBy = logs.map((l) => l.lines.filter((x) => x.msg === 'settle job: settled').map((x) => x.id));
    expect(settledBy.flat().sort()).toEqual([...ids].sort());
    const { entries } = await ctx.ledger();
    for (const id of ids) {
      const row = await ctx.t.db.selectFrom('charges').select('processor_idempotency_key').where('id', '=', id).executeTakeFirstOrThrow();
      expect(ledgerFor(entries, row.processor_idempotency_key)).toHaveLength(1);
    }
  });
});
