import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows, createTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext;
beforeAll(async () => {
  // Two slots, each of which a processor call may hold (the bulkhead would otherwise be a quarter of them).
  ctx = await createTestContext({ MAX_IN_FLIGHT_REQUESTS: '2', PROCESSOR_MAX_CONCURRENCY: '2' });
});
afterAll(() => ctx.destroy());

describe('load shedding', () => {
  it('answers 503 overloaded with Retry-After at once past the in-flight cap, storing nothing', async () => {
    const { account, auth } = await ctx.account();
    await ctx.setChaos({ mode: 'slow', latency_ms: 800, jitter_ms: 0 });
    try {
      const inFlight = [postCharge(ctx, auth, newKey()).then((r) => r), postCharge(ctx, auth, newKey()).then((r) => r)];
      await expect.poll(() => ctx.simulator.state.requests.charges, { timeout: 5000, interval: 10 }).toBe(2);
      const shed = await postCharge(ctx, auth, newKey());
      expectProblem(shed, 503, 'overloaded');
      expect(shed.body.detail).toMatch(/Nothing was changed/);
      expect(Number(shed.headers['retry-after'])).toBeGreaterThan(0);
      // Health endpoints are never shed: an overloaded api still says it is alive.
      expect((await request(ctx.app).get('/livez')).status).toBe(200);
      for (const res of await Promise.all(inFlight)) expect(res.status).toBe(201);
      expect(await countRows(ctx, account.id)).toEqual({ keys: 2, charges: 2 });
      expect((await request(ctx.app).get('/metrics')).text).toMatch(/^http_requests_shed_total 1$/m);
      expect((await postCharge(ctx, auth, newKey())).status).toBe(201);
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });
});
