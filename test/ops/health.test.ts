import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext({
    PROCESSOR_MAX_ATTEMPTS: '1',
    BREAKER_VOLUME_THRESHOLD: '2',
    BREAKER_ROLLING_WINDOW_MS: '60000',
    BREAKER_RESET_TIMEOUT_MS: '60000',
  });
});
afterAll(() => ctx.destroy());

describe('GET /health', () => {
  it('reports each dependency in the IETF health+json format', async () => {
    const res = await request(ctx.app).get('/health');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/health\+json/);
    expect(res.body.status).toBe('pass');
    expect(Object.keys(res.body.checks).sort()).toEqual([
      'database:responseTime',
      'payments:awaitingReconciliation',
      'processor:circuit',
      'queue:backlog',
    ]);
    for (const [check] of Object.values(res.body.checks) as Record<string, unknown>[][]) {
      expect(check).toMatchObject({ status: 'pass', time: expect.any(String), observedValue: expect.anything() });
    }
    expect(res.body.checks['database:responseTime'][0].observedUnit).toBe('ms');
  });

  it('warns, but stays 200 and ready, when the processor circuit is open', async () => {
    const { auth } = await ctx.account();
    await ctx.setChaos({ mode: 'down' });
    try {
      for (let i = 0; i < 2; i += 1) await postCharge(ctx, auth, newKey());
      expect(ctx.processor.breakerState()).toBe('open');
      // The report is cached for a second: poll until it shows the open circuit.
      await expect
        .poll(async () => (await request(ctx.app).get('/health')).body.checks['processor:circuit'][0].observedValue, {
          timeout: 10_000,
          interval: 100,
        })
        .toBe('open');
      const res = await request(ctx.app).get('/health');
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('warn');
      expect(res.body.checks['processor:circuit'][0]).toMatchObject({ observedValue: 'open', status: 'warn' });
      expect((await request(ctx.app).get('/readyz')).status).toBe(200);
      expect((await request(ctx.app).get('/metrics')).text).toMatch(/^processor_circuit_state 2$/m);
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });
});
