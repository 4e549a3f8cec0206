// Several api copies against one database: correctness comes from Postgres, not from any process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { loadConfig } from '../../src/config.ts';
import { type BuiltApp, buildApp } from '../helpers/app.ts';
import { charge, countRows, createGatedTestContext, ledgerFor, newKey, type TestContext } from '../helpers/context.ts';
import type { Gate } from '../helpers/gate.ts';
import { expectProblem } from '../helpers/problem.ts';
import request from 'supertest';
import { hashApiKey } from '../../src/accounts/accounts.service.ts';

let ctx: TestContext & { gate: Gate };
const copies: BuiltApp[] = [];
const pools: { end(): Promise<void> }[] = [];

beforeAll(async () => {
  // Every copy reaches the processor through the context's gate, so the test can hold a call in flight.
  // The held call's attempt and request last far longer than the 29 other answers can take, however busy
  // the machine: it is not retried (a second processor call) nor ended pending while they are answered.
  const env = { DB_CONNECTION_TIMEOUT_MS: '10000', REQUEST_TIMEOUT_MS: '30000', PROCESSOR_ATTEMPT_TIMEOUT_MS: '25000' };
  ctx = await createGatedTestContext(env);
  for (let i = 0; i < 2; i += 1) {
    const pool = createPool(ctx.t.url, loadConfig(env), createLogger('silent'));
    pools.push(pool);
    copies.push(await buildApp({ pool }, { ...env, PROCESSOR_URL: ctx.gate.url }));
  }
});
afterAll(async () => {
  for (const copy of copies) await copy.close();
  for (const pool of pools) await pool.end();
  await ctx.destroy();
});

describe('three api copies on one database', () => {
  it('charges once for one key sent to all of them at once: the copies that did not win answer 409 while it runs', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const apps = [ctx.app, ...copies.map((c) => c.app)];
    const processorCallsBefore = ctx.gate.arrived();
    let answered = 0;
    // The winner's processor call is held until the 29 others, 10 or 9 of them on each copy, are answered.
    ctx.gate.hold();
    const all = Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        request(apps[i % apps.length]!)
          .post('/v1/charges')
          .set(auth)
          .set('Idempotency-Key', key)
          .send(charge())
          .then((r) => {
            answered += 1;
            return { copy: i % apps.length, r };
          }),
      ),
    );
    all.catch(() => undefined); // awaited below
    try {
      await expect
        .poll(() => ({ answered, processorCalls: ctx.gate.arrived() - processorCallsBefore }), { timeout: 10_000, interval: 20 })
        .toEqual({ answered: 29, processorCalls: 1 });
    } finally {
      ctx.gate.open();
    }
    const answers = await all;
    const originals = answers.filter((a) => a.r.status === 201);
    expect(originals).toHaveLength(1);
    expect(originals[0]!.r.headers['idempotent-replayed']).toBeUndefined();
    const inUse = answers.filter((a) => a.r.status !== 201);
    for (const { r } of inUse) expectProblem(r, 409, 'idempotency_key_in_use');
    // Every copy turned the key away at least once, including both that did not run the charge.
    expect(new Set(inUse.map((a) => a.copy))).toEqual(new Set([0, 1, 2]));
    expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
    const row = await ctx.t.db.selectFrom('charges').select('processor_idempotency_key').where('account_id', '=', account.id).executeTakeFirstOrThrow();
    const entries = ledgerFor((await ctx.ledger()).entries, row.processor_idempotency_key);
    expect(entries).toHaveLength(1);
    expect(entries[0]!.id).toBe(originals[0]!.r.body.processor_reference);
    expect(ctx.gate.arrived() - processorCallsBefore).toBe(1);
  });

  it('refuses a revoked key from its very next request on every copy, though each had seen it live: nothing written, nothing sent', async () => {
    const { account, apiKey, auth } = await ctx.account();
    const apps = [ctx.app, ...copies.map((c) => c.app)];
    const post = (app: (typeof apps)[number], path: string, key: string, body: object) =>
      request(app).post(path).set(auth).set('Idempotency-Key', key).send(body);
    const revoke = (revoked_at: Date | null) =>
      ctx.t.db.updateTable('api_keys').set({ revoked_at }).where('secret_hash', '=', hashApiKey(apiKey)).execute();
    const earlier = { key: newKey(), id: '' };
    earlier.id = (await post(ctx.app, '/v1/charges', earlier.key, charge())).body.id;
    // Each way a request can be answered, as the first request after the revocation on every copy.
    const ways: Record<string, (app: (typeof apps)[number]) => request.Test> = {
      'a new charge': (app) => post(app, '/v1/charges', newKey(), charge()),
      'a replay': (app) => post(app, '/v1/charges', earlier.key, charge()),
      'a body that is refused': (app) => post(app, '/v1/charges', newKey(), { amount: -1 }),
      'a refund': (app) => post(app, '/v1/refunds', newKey(), { charge: earlier.id, amount: 100 }),
      'a refund of no charge': (app) => post(app, '/v1/refunds', newKey(), { charge: 'ch_nosuchcharge0000000000000', amount: 100 }),
    };
    for (const [way, send] of Object.entries(ways)) {
      await revoke(null);
      // Each copy sees the key live twice: the second time it takes it on trust from its memory.
      for (const app of apps) {
        for (let i = 0; i < 2; i += 1) expect((await post(app, '/v1/charges', newKey(), charge())).status).toBe(201);
      }
      const rowsBefore = await countRows(ctx, account.id);
      const callsBefore = ctx.gate.arrived();
      await revoke(new Date());
      for (const app of apps) {
        const answer = await send(app);
        expect(answer.status, `${way}: ${JSON.stringify(answer.body)}`).toBe(401);
        expectProblem(answer, 401, 'unauthenticated');
      }
      expect(await countRows(ctx, account.id), way).toEqual(rowsBefore);
      expect(ctx.gate.arrived(), way).toBe(callsBefore);
    }
    expect(await ctx.t.db.selectFrom('refunds').select('id').where('account_id', '=', account.id).execute()).toEqual([]);
  });
});
