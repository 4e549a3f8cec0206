// Every answer is labelled with its route template, in metrics and in the request log, errors included:
// an error that leaves the /v1 router must not lose the /v1 (express resets req.baseUrl on the way out).
import request from 'supertest';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestContext, newKey, type TestContext } from '../helpers/context.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.destroy());

it('labels a refused POST and a 404 GET with the whole route template, as it labels a success', async () => {
  const { auth } = await ctx.account();
  const refused = await request(ctx.app).post('/v1/charges').set(auth).set('Idempotency-Key', newKey()).send({ amount: -1 });
  expect(refused.status).toBe(400);
  expect(refused.body.code).toBe('validation_failed');
  const missing = await request(ctx.app).get('/v1/charges/ch_doesnotexist').set(auth);
  expect(missing.status).toBe(404);

  const metrics = (await request(ctx.app).get('/metrics')).text;
  expect(metrics).toContain(`http_request_duration_seconds_count{method="POST",route="/v1/charges",status="${refused.status}"} 1`);
  expect(metrics).toContain('http_request_duration_seconds_count{method="GET",route="/v1/charges/:id",status="404"} 1');
  expect(metrics).not.toMatch(/route="\/charges/);

  const logged = (id: string) => ctx.logs.lines.find((l) => l.msg === 'request completed' && l.request_id === id);
  expect(logged(refused.headers['x-request-id']!)).toMatchObject({ route: '/v1/charges', status: refused.status });
  expect(logged(missing.headers['x-request-id']!)).toMatchObject({ route: '/v1/charges/:id', status: 404 });
});
