// The README's webhook round trip, as a client would write it: the SDK against the api over a real port,
// an express receiver that verifies with the SDK. A charge made while the processor is down answers 202
// pending; once the processor is back the worker settles it and charge.succeeded arrives, verified.
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import request from 'supertest';
import { afterEach, expect, it } from 'vitest';
import { createClient, type Event, verifyWebhook, WebhookVerificationError } from '../../src/client/index.ts';
import { createTestContext, FAST_JOBS, type TestContext } from '../helpers/context.ts';

let ctx: TestContext | undefined;
const servers: http.Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  await ctx?.destroy();
  ctx = undefined;
});

async function listen(app: express.Express): Promise<string> {
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

it('create → 202 pending → processor back → charge.succeeded delivered and verified, once per webhook-id', async () => {
  ctx = await createTestContext({ ...FAST_JOBS, WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOK_RETRY_DELAY_MS: '100' });
  await ctx.startWorker();
  const { apiKey } = await ctx.account();
  const payments = createClient({ baseUrl: await listen(ctx.app), apiKey });

  // The receiver: verify the raw bytes, deduplicate on the id.
  let secret = '';
  const received: Event[] = [];
  const seen = new Set<string>();
  const receiver = express();
  receiver.post('/hooks', express.raw({ type: 'application/json' }), (req, res) => {
    try {
      const { id, payload } = verifyWebhook<Event>(req.body, req.headers, secret);
      if (!seen.has(id)) {
        seen.add(id);
        received.push(payload);
      }
      res.sendStatus(204);
    } catch (err) {
      res.sendStatus(err instanceof WebhookVerificationError ? 400 : 500);
    }
  });
  const endpoint = await payments.webhookEndpoints.create({ url: `${await listen(receiver)}/hooks`, enabled_events: ['charge.succeeded'] });
  secret = endpoint.secret;

  await ctx.setChaos({ mode: 'down' });
  const charge = await payments.charges.create({ amount: 1000, currency: 'usd', source: 'tok_visa' });
  expect(charge.status).toBe('pending');
  await ctx.setChaos({ mode: 'healthy' });

  await expect.poll(() => received.length, { timeout: 20_000, interval: 100 }).toBe(1);
  const [event] = received;
  expect(event).toMatchObject({ type: 'charge.succeeded', data: { object: { id: charge.id, status: 'succeeded' } } });
  expect(await payments.events.retrieve(event!.id)).toEqual(event);
  expect((await payments.events.list({ type: 'charge.pending' })).data.map((e) => (e.data.object as { id: string }).id)).toEqual([charge.id]);
  expect((await payments.webhookEndpoints.list()).data.map((e) => e.id)).toEqual([endpoint.id]);
  expect(await payments.webhookEndpoints.del(endpoint.id)).toEqual({ id: endpoint.id, object: 'webhook_endpoint', deleted: true });
  expect((await request(ctx.app).get('/v1/webhook_endpoints').set({ Authorization: `Bearer ${apiKey}` })).body.data).toEqual([]);
});
