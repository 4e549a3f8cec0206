// The client SDK against the real app over a real listening port, on a real database and processor simulator.
// Faults the app cannot make on demand (a 503 to the first N requests, a lost answer, a hung server, a 429)
// come from a tiny HTTP proxy in front of it.
import { once } from 'node:events';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AttemptInfo,
  type Charge,
  type ClientOptions,
  createClient,
  PaymentsError,
} from '../../src/client/index.ts';
import {
  countRows,
  createTestContext,
  FAST_JOBS,
  ledgerFor,
  newKey,
  processorKeyOf,
  type TestContext,
} from '../helpers/context.ts';
import { type Proxy, type ProxyAction, problemAnswer, startProxy } from './proxy.ts';

let ctx: TestContext;
let server: http.Server;
let appUrl: string;
const proxies: Proxy[] = [];

beforeAll(async () => {
  ctx = await createTestContext(FAST_JOBS);
  server = ctx.app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  appUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const proxy of proxies) await proxy.close();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await ctx?.destroy();
});

type Seen = AttemptInfo & { endedAt: number };

/** A client for a fresh account, recording every attempt with the time it ended. */
async function clientFor(overrides: Partial<ClientOptions> = {}) {
  const owner = await ctx.account();
  const attempts: Seen[] = [];
  const client = createClient({
    baseUrl: appUrl,
    apiKey: owner.apiKey,
    retryBaseMs: 1,
    ...overrides,
    onAttempt: (a) => attempts.push({ ...a, endedAt: performance.now() }),
  });
  return { ...owner, client, attempts };
}

async function proxyWith(decide: (req: http.IncomingMessage, n: number) => ProxyAction) {
  const proxy = await startProxy(appUrl, decide);
  proxies.push(proxy);
  return proxy;
}

/** The rejection of a promise that must reject with a PaymentsError. */
async function failure(promise: Promise<unknown>): Promise<PaymentsError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PaymentsError);
  return err as PaymentsError;
}

const visa = (amount = 1000) => ({ amount, currency: 'usd', source: 'tok_visa' });

/** Exactly one charge row for the account, and exactly one processor ledger entry under its processor key. */
async function expectChargedOnce(accountId: string, chargeId: string) {
  expect(await countRows(ctx, accountId)).toEqual({ keys: 1, charges: 1 });
  const processorKey = await processorKeyOf(ctx, 'charges', chargeId);
  expect(ledgerFor((await ctx.ledger()).entries, processorKey)).toHaveLength(1);
}

async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('client: charges and refunds', () => {
  it('creates a charge (201 succeeded) and retrieves it; the POST carries a key and JSON headers, the GET no key', async () => {
    const proxy = await proxyWith(() => 'forward');
    const { client, attempts, apiKey } = await clientFor({ baseUrl: `${proxy.url}/` });
    const created = await client.charges.create({ ...visa(1234), description: 'sdk', metadata: { order: '42' } });
    expect(created).toMatchObject({
      object: 'charge',
      amount: 1234,
      currency: 'usd',
      status: 'succeeded',
      amount_refunded: 0,
      refunded: false,
      description: 'sdk',
      metadata: { order: '42' },
      failure_code: null,
    });
    expect(created.id).toMatch(/^ch_/);
    expect(await client.charges.retrieve(created.id)).toEqual(created);

    const [post, get] = proxy.seen;
    expect(post!.headers).toMatchObject({
      authorization: `Bearer ${apiKey}`,
      'content-type': 'application/json',
      accept: 'application/json',
      'idempotency-key': expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect(get!.headers.accept).toBe('application/json');
    expect(get!.headers['idempotency-key']).toBeUndefined();
    expect(attempts.map((a) => [a.method, a.path, a.attempt, a.status])).toEqual([
      ['POST', '/v1/charges', 1, 201],
      ['GET', `/v1/charges/${created.id}`, 1, 200],
    ]);
    expect(attempts[0]!.idempotencyKey).toBe(post!.headers['idempotency-key']);
    expect(attempts[1]!.idempotencyKey).toBeUndefined();
    expect(attempts[0]!.requestId).toEqual(expect.any(String));
  });

  it('sends the idempotencyKey it is given: a repeat with it gets the same charge, made once', async () => {
    const { client, account } = await clientFor();
    const key = newKey();
    const first = await client.charges.create(visa(), { idempotencyKey: key });
    const again = await client.charges.create(visa(), { idempotencyKey: key });
    expect(again).toEqual(first);
    await expectChargedOnce(account.id, first.id);
  });

  it('lists newest first, and listAll follows starting_after page by page', async () => {
    const { client, attempts } = await clientFor();
    const made: Charge[] = [];
    for (const amount of [101, 102, 103]) made.push(await client.charges.create(visa(amount)));
    const newestFirst = made.map((c) => c.id).reverse();

    const page = await client.charges.list({ limit: 2 });
    expect(page).toMatchObject({ object: 'list', has_more: true });
    expect(page.data.map((c) => c.id)).toEqual(newestFirst.slice(0, 2));
    const rest = await client.charges.list({ limit: 2, starting_after: page.data[1]!.id });
    expect(rest.has_more).toBe(false);
    expect(rest.data.map((c) => c.id)).toEqual(newestFirst.slice(2));

    attempts.length = 0;
    const all: string[] = [];
    for await (const charge of client.charges.listAll({ limit: 2 })) all.push(charge.id);
    expect(all).toEqual(newestFirst);
    expect(attempts.map((a) => `${a.method} ${a.path} ${a.status}`)).toEqual(['GET /v1/charges 200', 'GET /v1/charges 200']);
  });

  it('refunds a charge and retrieves the refund', async () => {
    const { client } = await clientFor();
    const charge = await client.charges.create(visa(1000));
    const refund = await client.refunds.create({ charge: charge.id, amount: 400, reason: 'requested_by_customer' });
    expect(refund).toMatchObject({
      object: 'refund',
      amount: 400,
      currency: 'usd',
      charge: charge.id,
      reason: 'requested_by_customer',
      status: 'succeeded',
    });
    expect(await client.refunds.retrieve(refund.id)).toEqual(refund);
    expect((await client.charges.retrieve(charge.id)).amount_refunded).toBe(400);
  });
});

describe('client: errors that are final', () => {
  it('rejects a 402 with PaymentsError carrying the code, the request id and the failed charge, after one attempt', async () => {
    const { client, attempts } = await clientFor();
    const err = await failure(client.charges.create({ ...visa(), source: 'tok_chargeDeclined' }));
    expect(err).toMatchObject({ name: 'PaymentsError', status: 402, code: 'card_declined', attempts: 1 });
    expect(err.type).toBe('https://payments.example/problems/card-declined');
    expect(err.requestId).toEqual(expect.any(String));
    expect(err.requestId).toBe((err.body as { request_id: string }).request_id);
    expect(err.requestId).toBe(attempts[0]!.requestId);
    expect(err.payment).toMatchObject({ object: 'charge', status: 'failed', failure_code: 'card_declined' });
    expect(err.idempotencyKey).toBe(attempts[0]!.idempotencyKey);
    expect(attempts).toHaveLength(1);
    expect(attempts[0]).toMatchObject({ status: 402, code: 'card_declined' });
  });

  it.each([
    ['400 validation_failed', 400, 'validation_failed'],
    ['401 unauthenticated', 401, 'unauthenticated'],
    ['404 not_found', 404, 'not_found'],
    ['422 idempotency_key_reused', 422, 'idempotency_key_reused'],
    ['409 refund_exceeds_charge', 409, 'refund_exceeds_charge'],
  ])('does not retry a %s', async (_name, status, code) => {
    const { client, attempts } = await clientFor(status === 401 ? { apiKey: 'sk_test_nope' } : {});
    const call = async () => {
      switch (status) {
        case 400:
          return client.charges.create({ ...visa(), amount: 0 });
        case 401:
          return client.charges.list();
        case 404:
          return client.charges.retrieve('ch_doesnotexist');
        case 422: {
          const key = newKey();
          await client.charges.create(visa(1000), { idempotencyKey: key });
          attempts.length = 0;
          return client.charges.create(visa(2000), { idempotencyKey: key });
        }
        default: {
          const charge = await client.charges.create(visa(1000));
          attempts.length = 0;
          return client.refunds.create({ charge: charge.id, amount: 2000 });
        }
      }
    };
    const err = await failure(call());
    expect(err).toMatchObject({ status, code, attempts: 1 });
    expect(err.requestId).toEqual(expect.any(String));
    if (status === 400) expect(err.errors?.[0]).toMatchObject({ path: expect.any(String), message: expect.any(String) });
    expect(attempts.map((a) => a.status)).toEqual([status]);
  });
});

describe('client: retries', () => {
  it('retries 503 database_unavailable with the same key: one charge row, one processor ledger entry', async () => {
    const proxy = await proxyWith((_req, n) => (n <= 2 ? problemAnswer(503, 'database_unavailable', '0') : 'forward'));
    const { client, attempts, account } = await clientFor({ baseUrl: proxy.url });
    const charge = await client.charges.create(visa());
    expect(charge.status).toBe('succeeded');
    expect(attempts.map((a) => [a.attempt, a.status, a.code])).toEqual([
      [1, 503, 'database_unavailable'],
      [2, 503, 'database_unavailable'],
      [3, 201, undefined],
    ]);
    const keys = new Set([...attempts.map((a) => a.idempotencyKey), ...proxy.seen.map((r) => r.headers['idempotency-key'])]);
    expect(keys.size).toBe(1);
    expect([...keys][0]).toEqual(expect.any(String));
    await expectChargedOnce(account.id, charge.id);
  });

  it('retries lost connections with the same key: the answer the app sent and lost is replayed, the card charged once', async () => {
    const actions: ProxyAction[] = ['forward_then_drop', 'drop', 'forward'];
    const proxy = await proxyWith((_req, n) => actions[n - 1] ?? 'forward');
    const { client, attempts, account } = await clientFor({ baseUrl: proxy.url });
    const charge = await client.charges.create(visa());
    expect(charge.status).toBe('succeeded');
    expect(attempts.map((a) => [a.status, a.code])).toEqual([
      [0, 'network_error'],
      [0, 'network_error'],
      [201, undefined],
    ]);
    expect(attempts[0]!.error).toEqual(expect.any(String));
    expect(proxy.seen.map((r) => r.upstreamStatus)).toEqual([201, undefined, 201]);
    expect(proxy.seen[2]!.upstreamHeaders!['idempotent-replayed']).toBe('true');
    expect(new Set(proxy.seen.map((r) => r.headers['idempotency-key'])).size).toBe(1);
    expect(new Set(attempts.map((a) => a.idempotencyKey)).size).toBe(1);
    await expectChargedOnce(account.id, charge.id);
  });

  it('retries 409 idempotency_key_in_use, and retries a GET after a 5xx without ever sending a key', async () => {
    const proxy = await proxyWith((_req, n) =>
      n === 1 ? problemAnswer(409, 'idempotency_key_in_use', '0') : n === 3 ? problemAnswer(503, 'overloaded', '0') : 'forward',
    );
    const { client, attempts } = await clientFor({ baseUrl: proxy.url });
    const charge = await client.charges.create(visa());
    expect(await client.charges.retrieve(charge.id)).toEqual(charge);
    expect(attempts.map((a) => `${a.method} ${a.attempt} ${a.status}`)).toEqual([
      'POST 1 409',
      'POST 2 201',
      'GET 1 503',
      'GET 2 200',
    ]);
    expect(proxy.seen[0]!.headers['idempotency-key']).toBe(proxy.seen[1]!.headers['idempotency-key']);
    expect(proxy.seen.slice(2).map((r) => r.headers['idempotency-key'])).toEqual([undefined, undefined]);
  });

  it('gives up on a hung server with PaymentsError timeout (status 0) after maxAttempts per-attempt timeouts', async () => {
    const proxy = await proxyWith(() => 'hang');
    const { client, attempts, account } = await clientFor({ baseUrl: proxy.url, timeoutMs: 200, maxAttempts: 3 });
    const started = performance.now();
    const err = await failure(client.charges.create(visa()));
    expect(performance.now() - started).toBeGreaterThanOrEqual(3 * 190);
    expect(err).toMatchObject({ status: 0, code: 'timeout', attempts: 3 });
    expect(err.idempotencyKey).toEqual(expect.any(String));
    expect(attempts.map((a) => [a.status, a.code])).toEqual([
      [0, 'timeout'],
      [0, 'timeout'],
      [0, 'timeout'],
    ]);
    expect(attempts.every((a) => a.error && a.ms >= 190)).toBe(true);
    await until(() => proxy.seen.length === 3);
    expect(new Set(proxy.seen.map((r) => r.headers['idempotency-key']))).toEqual(new Set([err.idempotencyKey]));
    expect(await countRows(ctx, account.id)).toEqual({ keys: 0, charges: 0 });
  });

  it('honours Retry-After: after a 429 with Retry-After: 1 the next attempt waits about a second', async () => {
    const proxy = await proxyWith((_req, n) => (n === 1 ? problemAnswer(429, 'rate_limited', '1') : 'forward'));
    const { client, attempts } = await clientFor({ baseUrl: proxy.url });
    await client.charges.create(visa());
    expect(attempts.map((a) => a.status)).toEqual([429, 201]);
    const secondStartedAt = attempts[1]!.endedAt - attempts[1]!.ms;
    const gap = secondStartedAt - attempts[0]!.endedAt;
    // The backoff alone is at most 1 ms here (retryBaseMs 1): only Retry-After explains a second's wait.
    expect(gap).toBeGreaterThanOrEqual(900);
    expect(gap).toBeLessThan(5_000);
  });

  it('makes at most maxAttempts attempts, then rejects with the last answer', async () => {
    const proxy = await proxyWith(() => problemAnswer(503, 'overloaded', '0'));
    const { client, attempts } = await clientFor({ baseUrl: proxy.url, maxAttempts: 2 });
    const err = await failure(client.charges.create(visa()));
    expect(err).toMatchObject({ status: 503, code: 'overloaded', attempts: 2, requestId: 'proxy-overloaded' });
    expect(attempts.map((a) => a.attempt)).toEqual([1, 2]);
    expect(proxy.seen).toHaveLength(2);
  });

  it('stops at the overall deadline when Retry-After asks for longer than is left', async () => {
    const proxy = await proxyWith(() => problemAnswer(503, 'database_unavailable', '30'));
    const { client, attempts } = await clientFor({ baseUrl: proxy.url, deadlineMs: 1_000, maxAttempts: 10 });
    const started = performance.now();
    const err = await failure(client.charges.create(visa()));
    const took = performance.now() - started;
    // The 30 s asked for do not fit in the 1 s deadline: the client waits only until just before it, makes
    // one last short attempt, and ends with its answer (the same 503, or, when that attempt's 100 ms are
    // not enough on a busy machine, a timeout) instead of sleeping 30 s or trying all ten times.
    expect(attempts[0]).toMatchObject({ attempt: 1, status: 503, code: 'database_unavailable' });
    expect(err.attempts).toBeLessThanOrEqual(2);
    expect(err.attempts).toBe(attempts.length);
    expect([err.status, err.code]).toEqual(err.code === 'timeout' ? [0, 'timeout'] : [503, 'database_unavailable']);
    expect(took).toBeLessThan(15_000);
  });
});

describe('client: waitFor', () => {
  it('resolves at once, with no request, when the payment is already final', async () => {
    const { client, attempts } = await clientFor();
    const charge = await client.charges.create(visa());
    attempts.length = 0;
    expect(await client.waitFor(charge)).toBe(charge);
    expect(attempts).toHaveLength(0);
  });

  it('rejects with PaymentsError timeout while the charge stays pending', async () => {
    const { client } = await clientFor();
    await ctx.setChaos({ mode: 'down' });
    try {
      const pending = await client.charges.create(visa());
      expect(pending.status).toBe('pending');
      const err = await failure(client.waitFor(pending, { timeoutMs: 500, intervalMs: 50 }));
      expect(err).toMatchObject({ status: 0, code: 'timeout' });
      expect(err.attempts).toBeGreaterThanOrEqual(1);
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });

  it('follows a 202 (processor down) to succeeded once the processor is back and the worker settles it', async () => {
    const { client, attempts, account } = await clientFor();
    await ctx.setChaos({ mode: 'down' });
    const pending = await client.charges.create(visa());
    await ctx.setChaos({ mode: 'healthy' });
    expect(pending.status).toBe('pending');
    await ctx.startWorker();
    const settled = await client.waitFor(pending, { timeoutMs: 20_000, intervalMs: 100 });
    expect(settled).toMatchObject({ id: pending.id, status: 'succeeded', processor_reference: expect.any(String) });
    expect(attempts.filter((a) => a.method === 'GET').every((a) => a.path === `/v1/charges/${pending.id}`)).toBe(true);
    await expectChargedOnce(account.id, pending.id);
  });

  it('follows a pending refund (processor down) to succeeded the same way', async () => {
    const { client, attempts } = await clientFor();
    const charge = await client.charges.create(visa());
    await ctx.setChaos({ mode: 'down' });
    const pending = await client.refunds.create({ charge: charge.id });
    await ctx.setChaos({ mode: 'healthy' });
    expect(pending).toMatchObject({ object: 'refund', status: 'pending', amount: 1000 });
    await ctx.startWorker();
    const settled = await client.waitFor(pending, { timeoutMs: 20_000, intervalMs: 100 });
    expect(settled).toMatchObject({ id: pending.id, object: 'refund', status: 'succeeded' });
    expect(attempts.filter((a) => a.method === 'GET').every((a) => a.path === `/v1/refunds/${pending.id}`)).toBe(true);
  });
});
