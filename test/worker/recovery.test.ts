// What the protection lab showed, kept by tests: a hanging processor cannot take every request slot (the
// bulkhead defaults to a quarter of them), and once the processor answers again the settle jobs waiting
// out their backoff run at once, so pending charges settle within seconds of the recovery.
import { sql } from 'kysely';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { wakeDeferredSettleJobs } from '../../src/db/job-queue.ts';
import { createGatedTestContext, createTestContext, newKey, postCharge, readCharge, type TestContext } from '../helpers/context.ts';

let ctx: TestContext | undefined;
afterEach(async () => {
  await ctx?.destroy();
  ctx = undefined;
});

describe('the bulkhead', () => {
  it('defaults to a quarter of the request slots, and a setting wins', () => {
    expect(loadConfig({}).PROCESSOR_MAX_CONCURRENCY).toBe(50);
    expect(loadConfig({ MAX_IN_FLIGHT_REQUESTS: '32' }).PROCESSOR_MAX_CONCURRENCY).toBe(8);
    expect(loadConfig({ MAX_IN_FLIGHT_REQUESTS: '2' }).PROCESSOR_MAX_CONCURRENCY).toBe(1);
    expect(loadConfig({ MAX_IN_FLIGHT_REQUESTS: '32', PROCESSOR_MAX_CONCURRENCY: '20' }).PROCESSOR_MAX_CONCURRENCY).toBe(20);
  });

  it('keeps request slots for reads while the processor does not answer: charges past it answer 202 at once', async () => {
    // Processor calls are held at a gate (a processor that does not answer, for as long as the test wants);
    // their attempt and deadline are far longer than the posts and reads below take on a busy machine.
    const gated = await createGatedTestContext({
      MAX_IN_FLIGHT_REQUESTS: '8',
      PROCESSOR_ATTEMPT_TIMEOUT_MS: '10000',
      REQUEST_TIMEOUT_MS: '12000',
      PROCESSOR_MAX_ATTEMPTS: '1',
    });
    ctx = gated;
    const { gate } = gated;
    const { auth } = await gated.account();
    const before = gate.arrived();
    gate.hold();
    try {
      // Two charges hold the two processor slots the bulkhead allows (8 / 4).
      const held = [postCharge(gated, auth, newKey()).then((r) => r), postCharge(gated, auth, newKey()).then((r) => r)];
      await expect.poll(() => gate.arrived() - before, { timeout: 10_000, interval: 20 }).toBe(2);
      // The next ones do not wait: 202 pending, their slot given back at once.
      for (let i = 0; i < 6; i++) {
        const res = await postCharge(gated, auth, newKey());
        expect(res.status).toBe(202);
      }
      // Reads still find free slots.
      for (let i = 0; i < 10; i++) expect((await request(gated.app).get('/v1/charges').set(auth)).status).toBe(200);
      expect(gate.arrived() - before).toBe(2);
      gate.open();
      for (const res of await Promise.all(held)) expect(res.status).toBe(201);
    } finally {
      gate.open();
    }
  });
});

describe('recovery', () => {
  it('on a half-open circuit brings one deferred settle job forward (the probe), on a close all of them', async () => {
    ctx = await createTestContext({ PROCESSOR_MAX_ATTEMPTS: '1', SETTLE_RETRY_DELAY_SECONDS: '60', SETTLE_RETRY_DELAY_MAX_SECONDS: '60' });
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    for (let i = 0; i < 3; i++) expect((await postCharge(ctx, auth, newKey())).status).toBe(202);
    // As a settle job that found the processor down leaves them: waiting out a long delay.
    await sql`update pgboss.job set state = 'retry', start_after = now() + interval '1 hour' where name = 'settle'`.execute(ctx.t.db);
    const deferred = async () =>
      Number((await sql<{ n: number }>`select count(*) as n from pgboss.job where name = 'settle' and start_after > now()`.execute(ctx!.t.db)).rows[0]!.n);
    expect(await deferred()).toBe(3);
    expect(await wakeDeferredSettleJobs(ctx.t.db, { limit: 1 })).toBe(1);
    expect(await deferred()).toBe(2);
    expect(await wakeDeferredSettleJobs(ctx.t.db)).toBe(2);
    expect(await deferred()).toBe(0);
    await ctx.setChaos({ mode: 'healthy' });
  });

  it('brings deferred settle jobs forward when the circuit closes, instead of waiting out their backoff', async () => {
    ctx = await createTestContext({
      PROCESSOR_MAX_ATTEMPTS: '1',
      JOB_POLL_INTERVAL_SECONDS: '0.5',
      // A settle job that found the processor down waits a minute: far longer than this test waits.
      SETTLE_RETRY_DELAY_SECONDS: '60',
      SETTLE_RETRY_DELAY_MAX_SECONDS: '60',
      BREAKER_VOLUME_THRESHOLD: '2',
      BREAKER_ROLLING_WINDOW_MS: '1000',
      BREAKER_RESET_TIMEOUT_MS: '1000',
    });
    await ctx.startWorker();
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const pending = (await postCharge(ctx, auth, newKey())).body;
    expect(pending.status).toBe('pending');
    // Its settle job ran, found the processor down, and now waits out its delay.
    const deferred = async () =>
      (
        await sql<{ n: number }>`select count(*) as n from pgboss.job
          where name = 'settle' and data->>'id' = ${pending.id} and state = 'retry' and start_after > now() + interval '30 seconds'`.execute(ctx!.t.db)
      ).rows[0]!.n;
    await expect.poll(deferred, { timeout: 10_000, interval: 100 }).toBe(1);
    // More failures open the circuit.
    for (let i = 0; i < 3; i++) await postCharge(ctx, auth, newKey());
    await expect.poll(async () => (await request(ctx!.app).get('/metrics')).text.includes('processor_circuit_state 2'), { timeout: 5000 }).toBe(true);

    // The processor is back; the next charge after the reset timeout is the half-open probe, and it succeeds.
    await ctx.setChaos({ mode: 'healthy' });
    await expect
      .poll(async () => (await postCharge(ctx!, auth, newKey())).status, { timeout: 10_000, interval: 300 })
      .toBe(201);
    // The deferred job runs now, not a minute later.
    await expect.poll(async () => (await readCharge(ctx!, auth, pending.id)).status, { timeout: 10_000, interval: 100 }).toBe('succeeded');
    expect(ctx.logs.lines.some((l) => l.msg === 'processor may answer again: deferred settle jobs run now')).toBe(true);
  });

  it('brings forward, a deadline after the close, a settle job handed back to its backoff just after the circuit closed', async () => {
    const REQUEST_TIMEOUT_MS = 3000;
    ctx = await createTestContext({
      PROCESSOR_MAX_ATTEMPTS: '1',
      JOB_POLL_INTERVAL_SECONDS: '0.5',
      REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
      SETTLE_RETRY_DELAY_SECONDS: '60',
      SETTLE_RETRY_DELAY_MAX_SECONDS: '60',
      BREAKER_VOLUME_THRESHOLD: '2',
      BREAKER_ROLLING_WINDOW_MS: '1000',
      BREAKER_RESET_TIMEOUT_MS: '1000',
    });
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    const pending = (await postCharge(ctx, auth, newKey())).body;
    for (let i = 0; i < 3; i++) await postCharge(ctx, auth, newKey());
    expect(ctx.processor.breakerState()).toBe('open');
    await ctx.setChaos({ mode: 'healthy' });
    await expect
      .poll(async () => (await postCharge(ctx!, auth, newKey())).status, { timeout: 10_000, interval: 300 })
      .toBe(201);
    expect(ctx.processor.breakerState()).toBe('closed');
    // As a settle job the half-open circuit turned away leaves it when its run ends after the close's wake.
    await sql`update pgboss.job set state = 'retry', start_after = now() + interval '1 hour'
      where name = 'settle' and data->>'id' = ${pending.id}`.execute(ctx.t.db);
    await ctx.startWorker();
    await expect
      .poll(async () => (await readCharge(ctx!, auth, pending.id)).status, { timeout: 3 * REQUEST_TIMEOUT_MS, interval: 100 })
      .toBe('succeeded');
    expect(ctx.logs.lines.some((l) => l.msg === 'processor may answer again: deferred settle jobs run now' && l.reason === 'closed_late')).toBe(true);
  });
});
