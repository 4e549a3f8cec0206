import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countRows, createGatedTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';
import type { Gate } from '../helpers/gate.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext & { gate: Gate };
beforeAll(async () => {
  // Two slots, each of which a processor call may hold (the bulkhead would otherwise be a quarter of them);
  // calls go through a gate, which holds them in flight until the test has seen the third request shed.
  ctx = await createGatedTestContext({ MAX_IN_FLIGHT_REQUESTS: '2', PROCESSOR_MAX_CONCURRENCY: '2', REQUEST_TIMEOUT_MS: '12000', PROCESSOR_ATTEMPT_TIMEOUT_MS: '10000' });
});
afterAll(() => ctx.destroy());

describe('load shedding', () => {
  it('answers 503 overloaded with Retry-After at once past the in-flight cap, storing nothing', async () => {
    const { account, auth } = await ctx.account();
    const before = ctx.gate.arrived();
    ctx.gate.hold();
    try {
      const inFlight = [postCharge(ctx, auth, newKey()).then((r) => r), postCharge(ctx, auth, newKey()).then((r) => r)];
      await expect.poll(() => ctx.gate.arrived() - before, { timeout: 10_000, interval: 10 }).toBe(2);
      const shed = await postCharge(ctx, auth, newKey());
      ctx.gate.open();
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
      ctx.gate.open();
    }
  });
});
