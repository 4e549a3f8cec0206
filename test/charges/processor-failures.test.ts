// The processor misbehaving for real: hanging, down, flaky, losing answers. Each block has its own breaker.
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  charge,
  createTestContext,
  ledgerFor,
  newKey,
  postCharge,
  processorKeyOf,
  type TestContext,
} from '../helpers/context.ts';

const ledgerEntriesOf = async (ctx: TestContext, chargeId: string) =>
  ledgerFor((await ctx.ledger()).entries, await processorKeyOf(ctx, 'charges', chargeId));

describe('a processor that misbehaves', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    // An attempt gets 2 s, far above what an answering processor takes even on a busy machine (an attempt
    // that timed out would be one more request than the counts below), and the deadline ends a hang at 3 s.
    ctx = await createTestContext({
      REQUEST_TIMEOUT_MS: '3000',
      PROCESSOR_ATTEMPT_TIMEOUT_MS: '2000',
      PROCESSOR_RETRY_BASE_MS: '10',
      BREAKER_VOLUME_THRESHOLD: '1000',
    });
  });
  afterAll(() => ctx.destroy());

  it('answers 202 pending within its deadline when the processor hangs, never hanging itself', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'hang' });
    try {
      const res = await postCharge(ctx, auth, newKey()).timeout(10_000);
      expect(res.status).toBe(202);
      expect(res.body.status).toBe('pending');
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });

  it('retries a processor 5xx at most 3 times in all, then answers 202 pending', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    try {
      const before = (await ctx.ledger()).requests.charges;
      const res = await postCharge(ctx, auth, newKey());
      expect(res.status).toBe(202);
      expect((await ctx.ledger()).requests.charges - before).toBe(3);
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });

  it('retries a flaky 500 with the same processor key and charges once (seeded: fail, then pass)', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'flaky', failure_rate: 0.5, seed: 8 });
    try {
      const before = (await ctx.ledger()).requests.charges;
      const res = await postCharge(ctx, auth, newKey());
      expect(res.status).toBe(201);
      expect((await ctx.ledger()).requests.charges - before).toBe(2);
      expect(await ledgerEntriesOf(ctx, res.body.id)).toHaveLength(1);
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });

  it('charges once when the processor charges and loses the answer; the client retry gets 201 with the same charge', async () => {
    const { auth } = await ctx.account();
    const key = newKey();
    await ctx.setChaos({ mode: 'lose_response' });
    try {
      const first = await postCharge(ctx, auth, key);
      expect(first.status).toBe(201);
      const retry = await postCharge(ctx, auth, key);
      expect(retry.status).toBe(201);
      expect(retry.body.id).toBe(first.body.id);
      const entries = await ledgerEntriesOf(ctx, first.body.id);
      expect(entries).toHaveLength(1);
      expect(entries[0]!.id).toBe(first.body.processor_reference);
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });
});

describe('the processor circuit breaker', () => {
  // Short windows: nothing below depends on how many requests fit in one. The circuit opens at whichever
  // failure makes four in a window, and each reset lets exactly one probe through, counted when it happens.
  const WINDOW_MS = 2000;
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({
      PROCESSOR_MAX_ATTEMPTS: '1',
      BREAKER_VOLUME_THRESHOLD: '4',
      BREAKER_ERROR_THRESHOLD_PERCENT: '50',
      BREAKER_ROLLING_WINDOW_MS: String(WINDOW_MS),
      BREAKER_RESET_TIMEOUT_MS: String(WINDOW_MS),
    });
  });
  afterAll(() => ctx.destroy());

  it('opens when the processor keeps failing, then fails fast without calling it, then closes after a half-open probe', { timeout: 30 * WINDOW_MS }, async () => {
    const { auth } = await ctx.account();
    let halfOpens = 0;
    ctx.processor.onBreakerStateChange((state) => {
      if (state === 'half_open') halfOpens += 1;
    });
    await ctx.setChaos({ mode: 'down' });
    let failures = 0;
    while (ctx.processor.breakerState() !== 'open') {
      expect((await postCharge(ctx, auth, newKey())).status).toBe(202);
      failures += 1;
      expect(failures, 'four failures in a window open the circuit').toBeLessThanOrEqual(40);
    }
    expect(failures).toBeGreaterThanOrEqual(4);
    expect(ctx.logs.lines.some((l) => l.msg === 'processor circuit open' && l.state === 'open')).toBe(true);

    // While open, no charge reaches the processor: the only calls are the one probe each reset lets
    // through (turned away by the processor that is still down, opening the circuit again).
    const reached = (await ctx.ledger()).requests.charges;
    const halfOpensBefore = halfOpens;
    for (let i = 0; i < 5; i += 1) {
      const res = await postCharge(ctx, auth, newKey());
      expect(res.status).toBe(202);
      expect(res.body.status).toBe('pending');
    }
    const probes = halfOpens - halfOpensBefore;
    expect(probes, 'charges answered without calling the processor').toBeLessThan(5);
    expect((await ctx.ledger()).requests.charges).toBe(reached + probes);

    await ctx.setChaos({ mode: 'healthy' });
    await expect.poll(() => ctx.processor.breakerState(), { timeout: 10 * WINDOW_MS, interval: 50 }).toBe('half_open');
    const probe = await postCharge(ctx, auth, newKey());
    expect(probe.status).toBe(201);
    expect(ctx.processor.breakerState()).toBe('closed');
    expect((await ctx.ledger()).requests.charges).toBe(reached + probes + 1);
    expect(ctx.logs.lines.some((l) => l.msg === 'processor circuit closed')).toBe(true);
  });
});

describe('declines and the circuit breaker', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext({
      PROCESSOR_MAX_ATTEMPTS: '1',
      BREAKER_VOLUME_THRESHOLD: '4',
      BREAKER_ROLLING_WINDOW_MS: '10000',
      BREAKER_RESET_TIMEOUT_MS: '10000',
    });
  });
  afterAll(() => ctx.destroy());

  it('does not count a decline as a processor failure', async () => {
    const { auth } = await ctx.account();
    const before = (await ctx.ledger()).requests.charges;
    for (let i = 0; i < 10; i += 1) {
      expect((await postCharge(ctx, auth, newKey(), charge({ source: 'tok_chargeDeclined' }))).status).toBe(402);
    }
    expect(ctx.processor.breakerState()).toBe('closed');
    expect((await ctx.ledger()).requests.charges - before).toBe(10);
    expect((await postCharge(ctx, auth, newKey())).status).toBe(201);
  });
});

describe('the processor simulator', () => {
  let ctx: TestContext;
  beforeAll(async () => {
    ctx = await createTestContext();
  });
  afterAll(() => ctx.destroy());

  it('rejects an unknown chaos mode', async () => {
    const res = await request(ctx.simulator.url).put('/chaos').send({ mode: 'explode' });
    expect(res.status).toBe(400);
    expect((await request(ctx.simulator.url).get('/chaos')).body.mode).toBe('healthy');
  });

  it('answers a repeated Idempotency-Key with the first answer and charges nothing new', async () => {
    const body = { amount: 500, currency: 'usd', source: 'tok_visa' };
    const a = await request(ctx.simulator.url).post('/charges').set('Idempotency-Key', 'sim-1').send(body);
    const b = await request(ctx.simulator.url).post('/charges').set('Idempotency-Key', 'sim-1').send(body);
    expect(a.status).toBe(200);
    expect(b.body).toEqual(a.body);
    expect(ledgerFor((await ctx.ledger()).entries, 'sim-1')).toHaveLength(1);
  });
});
