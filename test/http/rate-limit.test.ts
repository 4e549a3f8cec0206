// Per-key rate limits, counted in Postgres so every api copy shares them: past the limit, 429 rate_limited
// with Retry-After and RateLimit headers, and nothing done; other keys and the operations endpoints go on.
import request from 'supertest';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildApp } from '../helpers/app.ts';
import { createTestContext, newKey, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

const LIMIT = { RATE_LIMIT_REQUESTS: '3', RATE_LIMIT_WINDOW_SECONDS: '3600' };
let ctx: TestContext;
let otherCopy: Awaited<ReturnType<typeof buildApp>>;
beforeAll(async () => {
  ctx = await createTestContext(LIMIT);
  // A second api copy on the same database.
  otherCopy = await buildApp({ pool: ctx.t.pool }, { ...LIMIT, PROCESSOR_URL: ctx.simulator.url });
});
afterAll(async () => {
  await otherCopy.close();
  await ctx.destroy();
});

it('counts every copy’s requests against the key, then answers 429 and does nothing', async () => {
  const { account, auth } = await ctx.account();
  const first = await request(ctx.app).get('/v1/charges').set(auth);
  expect(first.status).toBe(200);
  expect(first.headers['ratelimit-policy']).toBe('"per-key";q=3;w=3600');
  expect(first.headers['ratelimit']).toMatch(/^"per-key";r=2;t=\d+$/);
  expect((await request(otherCopy.app).get('/v1/charges').set(auth)).headers['ratelimit']).toMatch(/r=1;/);
  expect((await request(ctx.app).get('/v1/charges').set(auth)).headers['ratelimit']).toMatch(/r=0;/);

  const key = newKey();
  const limited = await request(otherCopy.app).post('/v1/charges').set(auth).set('Idempotency-Key', key).send({ amount: 1000, currency: 'usd', source: 'tok_visa' });
  expectProblem(limited, 429, 'rate_limited');
  const retryAfter = Number(limited.headers['retry-after']);
  expect(retryAfter).toBeGreaterThan(0);
  expect(retryAfter).toBeLessThanOrEqual(3600);
  expect(limited.headers['ratelimit']).toBe(`"per-key";r=0;t=${retryAfter}`);
  // Nothing was stored: no key, no charge, and the processor was never asked.
  const keys = await ctx.t.pool.query('select count(*)::int as n from idempotency_keys where key = $1', [key]);
  expect(keys.rows[0].n).toBe(0);
  const charges = await ctx.t.pool.query('select count(*)::int as n from charges where account_id = $1', [account.id]);
  expect(charges.rows[0].n).toBe(0);
  expect((await ctx.ledger()).entries).toHaveLength(0);
  // Limited requests are not counted: still limited, still r=0.
  expectProblem(await request(ctx.app).get('/v1/charges').set(auth), 429, 'rate_limited');

  // Another key is not limited, nor are the operations endpoints.
  const other = await ctx.account();
  expect((await request(ctx.app).get('/v1/charges').set(other.auth)).status).toBe(200);
  for (const path of ['/livez', '/readyz', '/metrics']) {
    expect((await request(ctx.app).get(path).set(auth)).status).toBe(200);
  }
});
