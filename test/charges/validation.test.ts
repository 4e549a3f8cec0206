// Every field rule of POST /v1/charges has a case that breaks it; a rejected request writes no row anywhere.
import { sql } from 'kysely';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { charge, createTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';
import { expectProblem } from '../helpers/problem.ts';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await createTestContext();
});
afterAll(() => ctx.destroy());

const without = (field: string) => {
  const body: Record<string, unknown> = charge();
  delete body[field];
  return body;
};

const manyKeys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));

async function rowCounts() {
  const { rows } = await sql<{ n: string }>`
    select (select count(*) from accounts) + (select count(*) from api_keys)
         + (select count(*) from idempotency_keys) + (select count(*) from charges) as n`.execute(ctx.t.db);
  return Number(rows[0]!.n);
}

const cases: [string, unknown, string][] = [
  ['amount missing', without('amount'), 'amount'],
  ['amount zero', charge({ amount: 0 }), 'amount'],
  ['amount negative', charge({ amount: -100 }), 'amount'],
  ['amount fractional', charge({ amount: 10.5 }), 'amount'],
  ['amount as a string', charge({ amount: '1000' }), 'amount'],
  ['amount over 99,999,999', charge({ amount: 100_000_000 }), 'amount'],
  ['currency missing', without('currency'), 'currency'],
  ['currency uppercase', charge({ currency: 'USD' }), 'currency'],
  ['currency unsupported', charge({ currency: 'xyz' }), 'currency'],
  ['currency not a string', charge({ currency: 840 }), 'currency'],
  ['source missing', without('source'), 'source'],
  ['source not a test token', charge({ source: 'tok_amex' }), 'source'],
  ['description over 500 characters', charge({ description: 'd'.repeat(501) }), 'description'],
  ['description not a string', charge({ description: 42 }), 'description'],
  ['metadata not an object', charge({ metadata: 'x' }), 'metadata'],
  ['metadata with 21 keys', charge({ metadata: manyKeys(21) }), 'metadata'],
  ['metadata key over 40 characters', charge({ metadata: { ['k'.repeat(41)]: 'v' } }), 'metadata'],
  ['metadata empty key', charge({ metadata: { '': 'v' } }), 'metadata'],
  ['metadata value over 500 characters', charge({ metadata: { k: 'v'.repeat(501) } }), 'metadata.k'],
  ['metadata value not a string', charge({ metadata: { k: 1 } }), 'metadata.k'],
  ['description with a NUL character', charge({ description: 'a\u0000b' }), 'description'],
  ['description with a lone surrogate', charge({ description: 'a\ud800b' }), 'description'],
  ['metadata value with a NUL character', charge({ metadata: { k: '\u0000' } }), 'metadata.k'],
  ['metadata key __proto__', charge({ metadata: JSON.parse('{"__proto__": "x"}') }), 'metadata.__proto__'],
  ['metadata key constructor', charge({ metadata: { constructor: 'x' } }), 'metadata.constructor'],
  ['metadata key prototype', charge({ metadata: { prototype: 'x' } }), 'metadata.prototype'],
  ['an unknown field', charge({ capture: true }), 'capture'],
  ['a body that is an array', [charge()], ''],
  ['an empty object', {}, 'amount'],
];

describe('POST /v1/charges validation', () => {
  it.each(cases)('answers 400 validation_failed for %s, naming the field, and writes nothing', async (_name, body, path) => {
    const { auth } = await ctx.account();
    const before = await rowCounts();
    const reached = (await ctx.ledger()).requests.charges;
    const res = await postCharge(ctx, auth, newKey(), body);
    expectProblem(res, 400, 'validation_failed');
    expect(res.body.errors.length).toBeGreaterThan(0);
    const paths: string[] = res.body.errors.map((e: { path: string }) => e.path);
    expect(paths.some((p) => p === path || p.startsWith(`${path}.`)), paths.join(', ')).toBe(true);
    for (const e of res.body.errors) expect(e.message).toEqual(expect.any(String));
    expect(await rowCounts()).toBe(before);
    expect((await ctx.ledger()).requests.charges).toBe(reached);
  });

  it('answers 400 validation_failed for a POST with no body at all', async () => {
    const { auth } = await ctx.account();
    const before = await rowCounts();
    const res = await request(ctx.app).post('/v1/charges').set(auth).set('Idempotency-Key', newKey());
    expectProblem(res, 400, 'validation_failed');
    expect(await rowCounts()).toBe(before);
  });

  it('accepts the limits themselves: amount 1 and 99,999,999, 20 metadata keys, 500-character texts', async () => {
    const { auth } = await ctx.account();
    const edge = {
      description: 'd'.repeat(500),
      metadata: { ...manyKeys(19), ['k'.repeat(40)]: 'v'.repeat(500) },
    };
    expect((await postCharge(ctx, auth, newKey(), charge({ amount: 1, ...edge }))).status).toBe(201);
    expect((await postCharge(ctx, auth, newKey(), charge({ amount: 99_999_999, currency: 'jpy' }))).status).toBe(201);
  });

  it('answers 415 and 413 for bodies that are not small JSON, writing nothing', async () => {
    const { auth } = await ctx.account();
    const before = await rowCounts();
    const notJson = await request(ctx.app)
      .post('/v1/charges')
      .set(auth)
      .set('Idempotency-Key', newKey())
      .type('form')
      .send({ amount: 1000 });
    expectProblem(notJson, 415, 'unsupported_media_type');
    const big = await postCharge(ctx, auth, newKey(), charge({ description: 'x'.repeat(20_000) }));
    expectProblem(big, 413, 'payload_too_large');
    expect(await rowCounts()).toBe(before);
  });
});
