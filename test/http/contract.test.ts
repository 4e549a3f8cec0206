// Real answers against openapi.yaml: every operation is called into the statuses it can give, and each
// answer must be one the document lists for that operation, with its media type, and a body its schema
// accepts. The document checked is the one openapi.yaml is generated from (test/docs.test.ts keeps the
// two identical).
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openApiDocument } from '../../src/cli/openapi.ts';
import { type RunningSimulator, startSimulator } from '../../src/simulator/simulator.ts';
import { charge, createTestContext, newKey, type TestContext } from '../helpers/context.ts';
import { type Gate, startGate } from '../helpers/gate.ts';

type Method = 'get' | 'post' | 'delete';
interface MediaType {
  schema?: unknown;
}
interface Operation {
  operationId: string;
  responses: Record<string, { content?: Record<string, MediaType>; headers?: Record<string, unknown> }>;
}

const doc = openApiDocument() as unknown as { paths: Record<string, Partial<Record<Method, Operation>>>; components: { schemas: Record<string, unknown> } };
// The component schemas become one JSON Schema document the response schemas refer into.
const pointInto = (schema: unknown) => JSON.parse(JSON.stringify(schema).replaceAll('"#/components/schemas/', '"openapi#/$defs/'));
const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
ajv.addSchema({ $id: 'openapi', $defs: pointInto(doc.components.schemas) });
const validators = new Map<string, ValidateFunction>();

/** Every (operationId, status) an answer was checked for, to check that each operation was exercised. */
const seen = new Map<string, Set<string>>();

/** The answer conforms to what openapi.yaml says `method path` answers. */
function conforms(method: Method, path: string, res: request.Response): request.Response {
  const operation = doc.paths[path]?.[method];
  expect(operation, `${method.toUpperCase()} ${path} is not in openapi.yaml`).toBeDefined();
  const status = String(res.status);
  const response = operation!.responses[status];
  expect(response, `${operation!.operationId} answered ${status}, which openapi.yaml does not list: ${res.text.slice(0, 300)}`).toBeDefined();
  seen.set(operation!.operationId, (seen.get(operation!.operationId) ?? new Set()).add(status));
  if (!response!.content) return res;
  const [mediaType, media] = Object.entries(response!.content)[0]!;
  expect(res.headers['content-type'], `${operation!.operationId} ${status}`).toMatch(new RegExp(`^${mediaType.replace('+', '\\+')}\\b`));
  if (!media.schema) return res;
  const key = `${operation!.operationId} ${status}`;
  let validate = validators.get(key);
  if (!validate) {
    validate = ajv.compile(pointInto(media.schema));
    validators.set(key, validate);
  }
  expect(validate(res.body), `${key}: ${ajv.errorsText(validate.errors)}\n${res.text.slice(0, 500)}`).toBe(true);
  for (const header of Object.keys(response!.headers ?? {})) {
    if (header === 'Idempotent-Replayed') continue; // only on replays
    expect(res.headers[header.toLowerCase()], `${key} header ${header}`).toBeDefined();
  }
  return res;
}

let ctx: TestContext;
let upstream: RunningSimulator;
let gate: Gate;
let auth: Record<string, string>;
beforeAll(async () => {
  // The processor is reached through a gate, so the test can hold a charge in flight.
  upstream = await startSimulator();
  gate = await startGate(upstream.url);
  gate.open();
  ctx = await createTestContext({ PROCESSOR_URL: gate.url, MAX_IN_FLIGHT_REQUESTS: '2', PROCESSOR_MAX_CONCURRENCY: '2' });
  ({ auth } = await ctx.account());
});
afterAll(async () => {
  await ctx.destroy();
  await gate.close();
  await upstream.close();
});

const chaos = (mode: string) => request(upstream.url).put('/chaos').send({ mode }).expect(200);
const postCharge = (key: string | undefined, body: unknown = charge()) => {
  const req = request(ctx.app).post('/v1/charges').set(auth);
  if (key) req.set('Idempotency-Key', key);
  return req.send(body as object);
};

describe('answers match openapi.yaml', () => {
  it('createCharge, getCharge, listCharges', async () => {
    const key = newKey();
    const created = conforms('post', '/v1/charges', await postCharge(key));
    expect(created.status).toBe(201);
    const replay = conforms('post', '/v1/charges', await postCharge(key));
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(conforms('post', '/v1/charges', await postCharge(key, charge({ amount: 999 }))).status).toBe(422);
    expect(conforms('post', '/v1/charges', await postCharge(newKey(), charge({ source: 'tok_chargeDeclined' }))).status).toBe(402);
    expect(conforms('post', '/v1/charges', await postCharge(newKey(), charge({ amount: -1 }))).status).toBe(400);
    expect(conforms('post', '/v1/charges', await postCharge(undefined)).status).toBe(400);
    const text = await request(ctx.app).post('/v1/charges').set(auth).set('Idempotency-Key', newKey()).set('Content-Type', 'text/plain').send('amount=1');
    expect(conforms('post', '/v1/charges', text).status).toBe(415);
    const big = await postCharge(newKey(), charge({ description: 'x'.repeat(200_000) }));
    expect(conforms('post', '/v1/charges', big).status).toBe(413);
    expect(conforms('post', '/v1/charges', await request(ctx.app).post('/v1/charges').send(charge())).status).toBe(401);

    await chaos('down');
    try {
      expect(conforms('post', '/v1/charges', await postCharge(newKey())).status).toBe(202);
    } finally {
      await chaos('healthy');
    }

    expect(conforms('get', '/v1/charges/{id}', await request(ctx.app).get(`/v1/charges/${created.body.id}`).set(auth)).status).toBe(200);
    expect(conforms('get', '/v1/charges/{id}', await request(ctx.app).get('/v1/charges/ch_doesnotexist').set(auth)).status).toBe(404);
    expect(conforms('get', '/v1/charges/{id}', await request(ctx.app).get(`/v1/charges/${created.body.id}`)).status).toBe(401);
    expect(conforms('get', '/v1/charges', await request(ctx.app).get('/v1/charges?limit=2').set(auth)).status).toBe(200);
    expect(conforms('get', '/v1/charges', await request(ctx.app).get('/v1/charges?limit=1000').set(auth)).status).toBe(400);
    expect(conforms('get', '/v1/charges', await request(ctx.app).get('/v1/charges')).status).toBe(401);
  });

  it('createCharge while another request holds its key, and while the api is full', async () => {
    gate.hold();
    try {
      const key = newKey();
      const before = gate.arrived();
      const held = postCharge(key).then((r) => r);
      held.catch(() => undefined); // awaited below
      await expect.poll(() => gate.arrived(), { timeout: 5000, interval: 10 }).toBe(before + 1);
      expect(conforms('post', '/v1/charges', await postCharge(key)).status).toBe(409);
      const second = postCharge(newKey()).then((r) => r);
      second.catch(() => undefined); // awaited below
      await expect.poll(async () => (await request(ctx.app).get('/v1/account').set(auth)).status, { timeout: 5000, interval: 20 }).toBe(503);
      conforms('get', '/v1/account', await request(ctx.app).get('/v1/account').set(auth));
      conforms('post', '/v1/charges', await postCharge(newKey()));
      gate.open();
      expect(conforms('post', '/v1/charges', await held).status).toBe(201);
      expect(conforms('post', '/v1/charges', await second).status).toBe(201);
    } finally {
      gate.open();
    }
  });

  it('createRefund and getRefund', async () => {
    const paid = (await postCharge(newKey(), charge({ amount: 1000 }))).body;
    const refund = conforms('post', '/v1/refunds', await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: paid.id, amount: 400 }));
    expect(refund.status).toBe(201);
    const tooMuch = await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: paid.id, amount: 5000 });
    expect(conforms('post', '/v1/refunds', tooMuch).status).toBe(409);
    const unknown = await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: 'ch_doesnotexist' });
    expect(conforms('post', '/v1/refunds', unknown).status).toBe(404);
    const invalid = await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: paid.id, amount: 0 });
    expect(conforms('post', '/v1/refunds', invalid).status).toBe(400);
    await chaos('down');
    try {
      const pending = await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: paid.id, amount: 100 });
      expect(conforms('post', '/v1/refunds', pending).status).toBe(202);
    } finally {
      await chaos('healthy');
    }
    expect(conforms('get', '/v1/refunds/{id}', await request(ctx.app).get(`/v1/refunds/${refund.body.id}`).set(auth)).status).toBe(200);
    expect(conforms('get', '/v1/refunds/{id}', await request(ctx.app).get('/v1/refunds/re_doesnotexist').set(auth)).status).toBe(404);
  });

  it('getAccount, with and without a rate limit', async () => {
    expect(conforms('get', '/v1/account', await request(ctx.app).get('/v1/account').set(auth)).status).toBe(200);
    const limited = await createTestContext({ RATE_LIMIT_REQUESTS: '1', RATE_LIMIT_WINDOW_SECONDS: '60' });
    try {
      const { auth: own } = await limited.account();
      expect(conforms('get', '/v1/account', await request(limited.app).get('/v1/account').set(own)).status).toBe(200);
      const refused = conforms('get', '/v1/account', await request(limited.app).get('/v1/account').set(own));
      expect(refused.status).toBe(429);
      expect(refused.headers['retry-after']).toBeDefined();
    } finally {
      await limited.destroy();
    }
  });

  it('events and webhook endpoints', async () => {
    const endpoint = (body: object, key = newKey()) =>
      request(ctx.app).post('/v1/webhook_endpoints').set(auth).set('Idempotency-Key', key).send(body);
    const key = newKey();
    const created = conforms('post', '/v1/webhook_endpoints', await endpoint({ url: 'https://93.184.215.14/hooks', enabled_events: ['*'] }, key));
    expect(created.status).toBe(201);
    expect(conforms('post', '/v1/webhook_endpoints', await endpoint({ url: 'https://93.184.215.14/hooks', enabled_events: ['*'] }, key)).status).toBe(201);
    expect(conforms('post', '/v1/webhook_endpoints', await endpoint({ url: 'https://93.184.215.14/other', enabled_events: ['*'] }, key)).status).toBe(422);
    expect(conforms('post', '/v1/webhook_endpoints', await endpoint({ url: 'http://127.0.0.1/hooks', enabled_events: ['*'] })).status).toBe(400);
    expect(conforms('post', '/v1/webhook_endpoints', await request(ctx.app).post('/v1/webhook_endpoints').send({})).status).toBe(401);
    expect(conforms('get', '/v1/webhook_endpoints', await request(ctx.app).get('/v1/webhook_endpoints').set(auth)).status).toBe(200);
    const path = `/v1/webhook_endpoints/${created.body.id}`;
    expect(conforms('get', '/v1/webhook_endpoints/{id}', await request(ctx.app).get(path).set(auth)).status).toBe(200);
    expect(conforms('delete', '/v1/webhook_endpoints/{id}', await request(ctx.app).delete(path).set(auth)).status).toBe(200);
    expect(conforms('delete', '/v1/webhook_endpoints/{id}', await request(ctx.app).delete(path).set(auth)).status).toBe(404);
    expect(conforms('get', '/v1/webhook_endpoints/{id}', await request(ctx.app).get(path).set(auth)).status).toBe(404);

    await postCharge(newKey());
    const list = conforms('get', '/v1/events', await request(ctx.app).get('/v1/events?limit=1').set(auth));
    expect(list.status).toBe(200);
    expect(conforms('get', '/v1/events', await request(ctx.app).get('/v1/events?type=nope').set(auth)).status).toBe(400);
    const [event] = list.body.data;
    expect(conforms('get', '/v1/events/{id}', await request(ctx.app).get(`/v1/events/${event.id}`).set(auth)).status).toBe(200);
    expect(conforms('get', '/v1/events/{id}', await request(ctx.app).get('/v1/events/evt_nope').set(auth)).status).toBe(404);
    const deliveries = `/v1/events/${event.id}/deliveries`;
    expect(conforms('get', '/v1/events/{id}/deliveries', await request(ctx.app).get(deliveries).set(auth)).status).toBe(200);
    expect(conforms('get', '/v1/events/{id}/deliveries', await request(ctx.app).get('/v1/events/evt_nope/deliveries').set(auth)).status).toBe(404);
  });

  it('the operations endpoints', async () => {
    for (const path of ['/livez', '/readyz', '/health', '/metrics']) {
      expect(conforms('get', path, await request(ctx.app).get(path)).status).toBe(200);
    }
  });

  it('every operation in openapi.yaml was called', () => {
    const operations = Object.values(doc.paths).flatMap((item) => Object.values(item).map((op) => op.operationId));
    expect([...seen.keys()].sort()).toEqual(operations.sort());
  });
});
