// Several api copies against one database: correctness comes from Postgres, not from any process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { loadConfig } from '../../src/config.ts';
import { type BuiltApp, buildApp } from '../helpers/app.ts';
import { charge, countRows, createTestContext, ledgerFor, newKey, type TestContext } from '../helpers/context.ts';
import request from 'supertest';

let ctx: TestContext;
const copies: BuiltApp[] = [];
const pools: { end(): Promise<void> }[] = [];

beforeAll(async () => {
  ctx = await createTestContext({ DB_CONNECTION_TIMEOUT_MS: '10000' });
  for (let i = 0; i < 2; i += 1) {
    const pool = createPool(ctx.t.url, loadConfig({ DB_CONNECTION_TIMEOUT_MS: '10000' }), createLogger('silent'));
    pools.push(pool);
    copies.push(await buildApp({ pool }, { PROCESSOR_URL: ctx.simulator.url }));
  }
});
afterAll(async () => {
  for (const copy of copies) await copy.close();
  for (const pool of pools) await pool.end();
  await ctx.destroy();
});

describe('three api copies on one database', () => {
  it('charges once for one key sent to all of them at once', async () => {
    const { account, auth } = await ctx.account();
    const key = newKey();
    const apps = [ctx.app, ...copies.map((c) => c.app)];
    await ctx.setChaos({ mode: 'slow', latency_ms: 150, jitter_ms: 50 });
    try {
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          request(apps[i % apps.length]!).post('/v1/charges').set(auth).set('Idempotency-Key', key).send(charge()),
        ),
      );
      expect(answers.every((a) => a.status === 201 || a.status === 409)).toBe(true);
      expect(answers.filter((a) => a.status === 201 && !a.headers['idempotent-replayed'])).toHaveLength(1);
      expect(await countRows(ctx, account.id)).toEqual({ keys: 1, charges: 1 });
      const row = await ctx.t.db.selectFrom('charges').select('processor_idempotency_key').where('account_id', '=', account.id).executeTakeFirstOrThrow();
      expect(ledgerFor((await ctx.ledger()).entries, row.processor_idempotency_key)).toHaveLength(1);
    } finally {
      await ctx.setChaos({ mode: 'healthy' });
    }
  });
});
