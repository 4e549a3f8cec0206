// Webhook delivery end to end, through real HTTP both ways: endpoints made through the API, events sent
// by the worker, received by a real receiver that verifies them with the SDK. At least once, signed as the
// Standard Webhooks specification says, retried until the receiver takes it, dead-lettered after the
// window, redelivered by the operator command.
import { execFile } from 'node:child_process';
import os from 'node:os';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { verifyWebhook } from '../../src/client/index.ts';
import { signDelivery } from '../../src/webhooks/signature.ts';
import { buildApp } from '../helpers/app.ts';
import { charge, createTestContext, FAST_JOBS, metricValue, newKey, postCharge, type TestContext } from '../helpers/context.ts';
import { type Receiver, startReceiver } from '../helpers/receiver.ts';

const run = promisify(execFile);

let ctx: TestContext | undefined;
let receiver: Receiver | undefined;
afterEach(async () => {
  await receiver?.close();
  await ctx?.destroy();
  ctx = receiver = undefined;
});

const WEBHOOKS_AT_TEST_SPEED = { ...FAST_JOBS, WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOK_RETRY_DELAY_MS: '100', WEBHOOK_RETRY_DELAY_MAX_MS: '200' };

async function makeEndpoint(c: TestContext, auth: Record<string, string>, url: string, enabledEvents: string[] = ['*']) {
  const res = await request(c.app).post('/v1/webhook_endpoints').set(auth).set('Idempotency-Key', newKey()).send({ url, enabled_events: enabledEvents });
  expect(res.status).toBe(201);
  return res.body as { id: string; secret: string };
}

describe('webhook delivery', () => {
  it('signs as the Standard Webhooks specification does: its own example', () => {
    // The specification's example (standard-webhooks, "Verifying webhooks").
    const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    expect(signDelivery(secret, 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')).toBe('v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  it('delivers a pending charge’s charge.succeeded after the receiver failed twice: signed, as the API shows the event, every attempt recorded', async () => {
    ctx = await createTestContext(WEBHOOKS_AT_TEST_SPEED);
    receiver = await startReceiver();
    const { auth } = await ctx.account();
    const endpoint = await makeEndpoint(ctx, auth, receiver.url, ['charge.succeeded']);
    receiver.setSecret(endpoint.secret);
    receiver.failNext(2, 503);
    await ctx.startWorker();

    await ctx.setChaos({ mode: 'down' });
    const created = await postCharge(ctx, auth, newKey());
    expect(created.status).toBe(202);
    await ctx.setChaos({ mode: 'healthy' });

    await expect.poll(() => receiver!.accepted.size, { timeout: 20_000, interval: 100 }).toBe(1);
    const [event] = (await request(ctx.app).get('/v1/events?type=charge.succeeded').set(auth)).body.data;
    expect(event.data.object).toMatchObject({ id: created.body.id, status: 'succeeded' });
    // Three tries of the same event: the same webhook-id, the first two refused by the receiver.
    expect(receiver.received.map((d) => [d.id, d.status])).toEqual([
      [event.id, 503],
      [event.id, 503],
      [event.id, 200],
    ]);
    const last = receiver.received.at(-1)!;
    expect(JSON.parse(last.body)).toEqual(event);
    expect(receiver.accepted.get(event.id)).toEqual(event);
    expect(last.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(receiver.unverified).toEqual([]);
    // The same bytes do not verify when altered, or under another secret.
    expect(() => verifyWebhook(last.body.replace('succeeded', 'failed'), last.headers as Record<string, string>, endpoint.secret)).toThrow();
    const other = await makeEndpoint(ctx, auth, receiver.url, ['refund.failed']);
    expect(() => verifyWebhook(last.body, last.headers as Record<string, string>, other.secret)).toThrow();

    const deliveries = (await request(ctx.app).get(`/v1/events/${event.id}/deliveries`).set(auth)).body.data;
    expect(deliveries).toHaveLength(1);
    expect(deliveries[0]).toMatchObject({ endpoint: endpoint.id, status: 'succeeded', attempt_count: 3, last_error: null });
    expect(deliveries[0].attempts.map((a: { response_status: number }) => a.response_status)).toEqual([503, 503, 200]);
    expect(deliveries[0].attempts[0].error).toBe('answered 503');
    // Only the type the endpoint asked for: no delivery of charge.pending.
    const [pendingEvent] = (await request(ctx.app).get('/v1/events?type=charge.pending').set(auth)).body.data;
    expect((await request(ctx.app).get(`/v1/events/${pendingEvent.id}/deliveries`).set(auth)).body.data).toEqual([]);
    expect(await metricValue(ctx, 'webhook_delivery_attempt_duration_seconds_count{outcome="succeeded"}')).toBe(1);
    expect(await metricValue(ctx, 'webhook_delivery_attempt_duration_seconds_count{outcome="http_error"}')).toBe(2);
  });

  // The 2 s window is waited out in full; the two polls below are bounded by 22 s and 20 s, then the command: 90 s.
  it('dead-letters a delivery whose receiver is down past the window, disables the endpoint, and redelivers on the operator’s command', { timeout: 90_000 }, async () => {
    // Retrying within a window is the test above's; this one needs only the window to end, however few
    // attempts a busy machine fits into it.
    const windowSeconds = 2;
    ctx = await createTestContext({ ...WEBHOOKS_AT_TEST_SPEED, WEBHOOK_RETRY_WINDOW_SECONDS: String(windowSeconds) });
    receiver = await startReceiver();
    const { auth } = await ctx.account();
    const endpoint = await makeEndpoint(ctx, auth, receiver.url, ['charge.succeeded', 'charge.failed']);
    receiver.setSecret(endpoint.secret);
    await receiver.close(); // down: connections refused
    await ctx.startWorker();

    const paid = (await postCharge(ctx, auth, newKey())).body;
    const [event] = (await request(ctx.app).get('/v1/events').set(auth)).body.data;
    await expect
      // Dead-lettered only once the window is over: the window, then 20 s for the attempt that ends it.
      .poll(async () => (await request(ctx!.app).get(`/v1/webhook_endpoints/${endpoint.id}`).set(auth)).body.status, {
        timeout: windowSeconds * 1000 + 20_000,
        interval: 200,
      })
      .toBe('disabled');
    const [dead] = (await request(ctx.app).get(`/v1/events/${event.id}/deliveries`).set(auth)).body.data;
    expect(dead.status).toBe('failed');
    expect(dead.attempt_count).toBeGreaterThanOrEqual(1);
    // Not before its window was over: only once the next retry (100-200 ms away) would have come after it.
    expect(dead.id).toMatch(/^whd_[0-9a-f]{32}$/);
    const { window_ends_at: windowEnd } = await ctx.t.db
      .selectFrom('webhook_deliveries')
      .select('window_ends_at')
      .where('id', '=', dead.id.replace(/^whd_(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5'))
      .executeTakeFirstOrThrow();
    const { rows } = await sql<{ now: Date }>`select now()`.execute(ctx.t.db);
    expect(rows[0]!.now.getTime()).toBeGreaterThanOrEqual(windowEnd.getTime() - Number(WEBHOOKS_AT_TEST_SPEED.WEBHOOK_RETRY_DELAY_MAX_MS));
    expect(dead.last_error).toMatch(/ECONNREFUSED/);
    const disabled = (await request(ctx.app).get('/v1/events?type=webhook_endpoint.disabled').set(auth)).body.data;
    expect(disabled).toHaveLength(1);
    expect(disabled[0].data.object).toMatchObject({ id: endpoint.id, status: 'disabled' });
    expect((await request(ctx.app).get(`/v1/events/${event.id}`).set(auth)).body.data.object.id).toBe(paid.id);
    expect(await metricValue(ctx, 'webhook_deliveries_dead_lettered_total')).toBe(1);
    expect(await metricValue(ctx, 'webhook_endpoints_disabled_total')).toBe(1);
    // Events made while the endpoint is disabled are not sent to it.
    await postCharge(ctx, auth, newKey(), charge({ source: 'tok_chargeDeclined' }));
    const [failedEvent] = (await request(ctx.app).get('/v1/events?type=charge.failed').set(auth)).body.data;
    expect((await request(ctx.app).get(`/v1/events/${failedEvent.id}/deliveries`).set(auth)).body.data).toEqual([]);

    // The receiver is fixed; the operator redelivers the event with the command a person would run.
    await receiver.reopen();
    const { stdout } = await run(process.execPath, ['src/cli/webhooks-redeliver.ts', event.id], {
      env: { ...process.env, DATABASE_URL: ctx.t.url, MIGRATE_ON_START: 'false', LOG_LEVEL: 'warn' },
    });
    expect(stdout).toBe(`1 dead-lettered webhook delivery of ${event.id} pending again\n`);
    await expect.poll(() => receiver!.accepted.has(event.id), { timeout: 20_000, interval: 100 }).toBe(true);
    expect(receiver.accepted.get(event.id)).toEqual(event);
    expect((await request(ctx.app).get(`/v1/webhook_endpoints/${endpoint.id}`).set(auth)).body).toMatchObject({ status: 'enabled', disabled_reason: null });
    const [redelivered] = (await request(ctx.app).get(`/v1/events/${event.id}/deliveries`).set(auth)).body.data;
    expect(redelivered).toMatchObject({ status: 'succeeded', attempt_count: dead.attempt_count + 1 });
  });

  it('refuses at delivery time an address that is not public, when the worker does not allow them', async () => {
    ctx = await createTestContext({ ...WEBHOOKS_AT_TEST_SPEED, WORKER_ENABLED: 'false' });
    receiver = await startReceiver();
    const { auth } = await ctx.account();
    // Made while private addresses were allowed (or while the name resolved elsewhere)...
    await makeEndpoint(ctx, auth, receiver.url.replace('127.0.0.1', 'localhost'));
    // ...delivered by a worker that does not allow them.
    const strict = await buildApp({ pool: ctx.t.pool }, { PROCESSOR_URL: ctx.simulator.url, ...FAST_JOBS, WEBHOOK_RETRY_DELAY_MS: '100' });
    try {
      const worker = strict.service.worker();
      await worker.start();
      await postCharge(ctx, auth, newKey());
      const [event] = (await request(ctx.app).get('/v1/events').set(auth)).body.data;
      await expect
        .poll(async () => (await request(ctx!.app).get(`/v1/events/${event.id}/deliveries`).set(auth)).body.data[0]?.attempt_count ?? 0, {
          timeout: 20_000,
          interval: 100,
        })
        .toBeGreaterThanOrEqual(1);
      await worker.stop();
      const [delivery] = (await request(ctx.app).get(`/v1/events/${event.id}/deliveries`).set(auth)).body.data;
      expect(delivery.status).toBe('pending');
      expect(delivery.attempts[0]).toMatchObject({ response_status: null });
      expect(delivery.attempts[0].error).toBe('ERR_WEBHOOK_ADDRESS_REFUSED: localhost resolves to an address that is not public (WEBHOOK_ALLOW_PRIVATE_URLS=true allows such addresses, for development)');
      expect(receiver.received).toEqual([]);
    } finally {
      await strict.close();
    }
  });

  it("refuses at delivery every spelling of an address that is not public and this host's own, so nothing reaches a listener on every interface", async () => {
    // Made while private addresses were allowed: each of these reaches the listener below from this host.
    ctx = await createTestContext({ ...WEBHOOKS_AT_TEST_SPEED, WORKER_ENABLED: 'false', WEBHOOK_ALLOW_PRIVATE_URLS: 'true' });
    receiver = await startReceiver({ host: '0.0.0.0' });
    const { auth } = await ctx.account();
    const port = new URL(receiver.url).port;
    const own = Object.values(os.networkInterfaces())
      .flat()
      .filter((a) => a && !a.internal && a.family === 'IPv4')
      .map((a) => a!.address);
    expect(own.length, 'this host has an interface address besides loopback').toBeGreaterThan(0);
    const urls = [
      `http://192.0.2.2:${port}/hooks`,
      `http://3221225986:${port}/hooks`,
      `http://0xc0.0.2.2:${port}/hooks`,
      `http://192.0.2.2.:${port}/hooks`,
      `http://198.51.100.7:${port}/hooks`,
      `http://203.0.113.9:${port}/hooks`,
      `http://192.88.99.1:${port}/hooks`,
      ...own.map((address) => `http://${address}:${port}/hooks`),
    ];
    for (const url of urls) await makeEndpoint(ctx, auth, url);
    // ...delivered by a worker that does not allow them.
    const strict = await buildApp({ pool: ctx.t.pool }, { PROCESSOR_URL: ctx.simulator.url, ...FAST_JOBS, WEBHOOK_RETRY_DELAY_MS: '100' });
    const deliveries = async (eventId: string) =>
      (await request(ctx!.app).get(`/v1/events/${eventId}/deliveries`).set(auth)).body.data as {
        status: string;
        attempt_count: number;
        attempts: { error: string | null; response_status: number | null }[];
      }[];
    let eventId: string;
    try {
      const worker = strict.service.worker();
      await worker.start();
      await postCharge(ctx, auth, newKey());
      eventId = (await request(ctx.app).get('/v1/events').set(auth)).body.data[0].id;
      await expect
        .poll(async () => (await deliveries(eventId)).filter((d) => d.attempt_count >= 1).length, { timeout: 20_000, interval: 100 })
        .toBe(urls.length);
      await worker.stop();
    } finally {
      await strict.close();
    }
    for (const delivery of await deliveries(eventId)) {
      expect(delivery.status).toBe('pending');
      expect(delivery.attempts[0]!.response_status).toBeNull();
      expect(delivery.attempts[0]!.error).toMatch(/^ERR_WEBHOOK_ADDRESS_REFUSED: \S+ is not a public address \(WEBHOOK_ALLOW_PRIVATE_URLS=true allows/);
    }
    expect(receiver.received).toEqual([]);
    // The refusal is what kept them out: the context's own worker, which allows private addresses, reaches the listener.
    const lenient = await ctx.startWorker();
    await expect.poll(() => receiver!.received.length, { timeout: 20_000, interval: 100 }).toBeGreaterThan(0);
    await lenient.stop();
  });

  it('does nothing for a stale job, ends a delivery whose endpoint was disabled, and records a secret it cannot open as a failed attempt', async () => {
    ctx = await createTestContext({ ...WEBHOOKS_AT_TEST_SPEED, WORKER_ENABLED: 'false' });
    receiver = await startReceiver();
    const { auth } = await ctx.account();
    const endpoint = await makeEndpoint(ctx, auth, receiver.url);
    await postCharge(ctx, auth, newKey());
    await postCharge(ctx, auth, newKey());
    const deliveries = await ctx.t.db.selectFrom('webhook_deliveries').select(['id', 'attempts']).orderBy('created_at').execute();
    expect(deliveries).toHaveLength(2);
    const [first, second] = deliveries;
    const { webhooks } = ctx.services;

    // A job for an attempt that is not the next one (a repeat, or one the sweep made meanwhile) sends nothing.
    expect(await webhooks.deliver(first!.id, 2)).toBe('skipped');
    expect(receiver.received).toEqual([]);

    // A delivery written while its endpoint was being disabled: ended, not left pending for the sweep forever.
    await sql`update webhook_endpoints set status = 'disabled' where id = ${endpoint.id}`.execute(ctx.t.db);
    expect(await webhooks.deliver(first!.id, 1)).toBe('failed');
    expect(await webhooks.redrive(100)).toBe(0); // ended, it is not driven again; the other still has its job
    await sql`update webhook_endpoints set status = 'enabled' where id = ${endpoint.id}`.execute(ctx.t.db);

    // A worker whose WEBHOOK_SECRET_KEY is not the one the secret was sealed with: a failed attempt, recorded.
    const wrongKey = await buildApp({ pool: ctx.t.pool }, { PROCESSOR_URL: ctx.simulator.url, ...WEBHOOKS_AT_TEST_SPEED, WEBHOOK_SECRET_KEY: 'another key of 16 characters or more' });
    try {
      expect(await wrongKey.services.webhooks.deliver(second!.id, 1)).toBe('pending');
    } finally {
      await wrongKey.close();
    }
    const rows = await ctx.t.db.selectFrom('webhook_deliveries').select(['id', 'status', 'attempts', 'last_error']).orderBy('created_at').execute();
    expect(rows).toEqual([
      { id: first!.id, status: 'failed', attempts: 0, last_error: 'endpoint disabled' },
      { id: second!.id, status: 'pending', attempts: 1, last_error: 'not sent: the endpoint secret cannot be opened with this WEBHOOK_SECRET_KEY' },
    ]);
    expect(receiver.received).toEqual([]);
  });

  it('gives a pending delivery that lost its job a new one (the sweep)', async () => {
    ctx = await createTestContext({ ...WEBHOOKS_AT_TEST_SPEED });
    receiver = await startReceiver();
    const { auth } = await ctx.account();
    const endpoint = await makeEndpoint(ctx, auth, receiver.url);
    receiver.setSecret(endpoint.secret);
    await postCharge(ctx, auth, newKey());
    // Its job deleted by hand before any worker ran: nothing drives the delivery but the sweep.
    await sql`delete from pgboss.job where name = 'webhook'`.execute(ctx.t.db);
    await ctx.startWorker();
    await expect.poll(() => receiver!.accepted.size, { timeout: 20_000, interval: 100 }).toBe(1);
  });
});
