// The round trips a request costs, counted on the driver: every statement any pooled client sends while one
// request runs. The design's floor: a new charge or refund is authenticate + claim-with-intent + outcome-with-
// finish; a replay is authenticate + the claim that finds the stored answer, and it locks no row.
import pg from 'pg';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestContext, newKey, postCharge, type TestContext } from '../helpers/context.ts';

const sent: string[] = [];
let counting = false;
const query = pg.Client.prototype.query;

/** A new charge with a fresh key, then its replay: their answers and the statements each sent. */
async function chargeThenReplay(c: TestContext, auth: Record<string, string>) {
  const key = newKey();
  let first!: request.Response;
  const created = await statementsOf(async () => {
    first = await postCharge(c, auth, key);
  });
  let replay!: request.Response;
  const replayed = await statementsOf(async () => {
    replay = await postCharge(c, auth, key);
  });
  return { first, created, replay, replayed };
}

/** The statements sent while `run` runs. */
async function statementsOf(run: () => Promise<unknown>): Promise<string[]> {
  sent.length = 0;
  counting = true;
  try {
    await run();
  } finally {
    counting = false;
  }
  return [...sent];
}

let ctx: TestContext;
beforeAll(async () => {
  // Before any client exists, so every one of the app's clients counts.
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string }).text;
    if (counting && text) sent.push(text);
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  // With a rate limit, as in production: the key's count rides on the authenticating statement.
  ctx = await createTestContext({ RATE_LIMIT_REQUESTS: '1000' });
});
afterAll(async () => {
  await ctx.destroy();
  pg.Client.prototype.query = query;
});

describe('statements per request', () => {
  it('a new charge sends 3 statements and a replay 2, none of them a row lock or a transaction', async () => {
    const { auth } = await ctx.account();
    const { first, created, replay, replayed } = await chargeThenReplay(ctx, auth);
    expect(first.status).toBe(201);
    expect(created).toHaveLength(3);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.text).toBe(first.text);
    expect(replayed).toHaveLength(2);
    for (const text of [...created, ...replayed]) {
      expect(text).not.toMatch(/for update|^\s*begin/i);
    }
  });

  it('a new refund sends 3 statements too, plus one read of the charge it refunds', async () => {
    const { auth } = await ctx.account();
    const charge = await postCharge(ctx, auth, newKey());
    let refund!: request.Response;
    const statements = await statementsOf(async () => {
      refund = await request(ctx.app).post('/v1/refunds').set(auth).set('Idempotency-Key', newKey()).send({ charge: charge.body.id, amount: 300 });
    });
    expect(refund.status).toBe(201);
    expect(statements).toHaveLength(4);
    expect(statements.filter((s) => /for update|^\s*begin/i.test(s))).toEqual([]);
  });

  it('without a rate limit, a key the api saw live costs no statement of its own: 2 for a new charge, 1 for a replay', async () => {
    const plain = await createTestContext();
    try {
      const { auth } = await plain.account();
      expect((await postCharge(plain, auth, newKey())).status).toBe(201); // the key, seen live
      const { first, created, replay, replayed } = await chargeThenReplay(plain, auth);
      expect(first.status).toBe(201);
      expect(created).toHaveLength(2);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.text).toBe(first.text);
      expect(replayed).toHaveLength(1);
      expect(replayed[0]).toMatch(/api_keys/);
    } finally {
      await plain.destroy();
    }
  });
});
