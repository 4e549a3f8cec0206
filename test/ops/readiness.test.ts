// Readiness against a database that really stops and starts again: this file runs its own Postgres server.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import type pg from 'pg';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, createPool, type Db, migrateToLatest } from '../../src/db/database.ts';
import { type EmbeddedServer, startEmbeddedPostgres } from '../../src/db/embedded.ts';
import { createLogger } from '../../src/logger.ts';
import { startSimulator } from '../../src/simulator/simulator.ts';
import { buildApp } from '../helpers/app.ts';
import { createTestDatabase } from '../helpers/database.ts';
import { makeAccount } from '../helpers/factories.ts';
import { freePort } from '../helpers/ports.ts';
import { expectProblem } from '../helpers/problem.ts';

let dir: string;
let server: EmbeddedServer;
let pool: pg.Pool;
let db: Db;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'payments-readiness-'));
  await chmod(dir, 0o755);
  server = await startEmbeddedPostgres({ dir: path.join(dir, 'data'), port: await freePort() });
  const settings = {
    DB_POOL_MAX: 4,
    DB_CONNECTION_TIMEOUT_MS: 500,
    DB_STATEMENT_TIMEOUT_MS: 1000,
    DB_IDLE_IN_TRANSACTION_TIMEOUT_MS: 1000,
    REQUEST_TIMEOUT_MS: 5000,
  };
  pool = createPool(server.url, settings, createLogger('silent'));
  db = createDb(pool);
  await migrateToLatest(db);
});
afterAll(async () => {
  await db?.destroy();
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The value of an unlabelled gauge in a /metrics text. */
const gauge = (text: string, name: string) => Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.slice(name.length + 1));

describe('GET /readyz and /livez', () => {
  // Two polls of 10 s at most, and a Postgres server stopped and started again: 60 s.
  it('follows the database down and back up without a restart', { timeout: 60_000 }, async () => {
    const simulator = await startSimulator();
    const built = await buildApp({ pool }, { READINESS_TIMEOUT_MS: '800', PROCESSOR_URL: simulator.url });
    const { app } = built;
    const { auth } = await makeAccount(db);
    const key = 'charge-during-outage';
    expect((await request(app).get('/health')).body.status).toBe('pass');

    expect((await request(app).get('/readyz')).status).toBe(200);

    await server.stop();
    const down = await request(app).get('/readyz');
    expect(down.status).toBe(503);
    expect(down.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(down.body).toMatchObject({ code: 'not_ready', checks: { database: { status: 'fail' } } });
    expect((await request(app).get('/livez')).status).toBe(200);

    const api = await request(app).get('/v1/account').set(auth);
    expect(api.status).toBe(503);
    expect(api.body.code).toBe('database_unavailable');
    expect(api.headers['retry-after']).toBeDefined();
    const charge = await request(app)
      .post('/v1/charges')
      .set(auth)
      .set('Idempotency-Key', key)
      .send({ amount: 100, currency: 'usd', source: 'tok_visa' });
    expectProblem(charge, 503, 'database_unavailable');
    // The key was never claimed: the answer says so, and a new key would be as safe as this one.
    expect(charge.body.detail).toMatch(/Nothing was written/);
    expect(down.text).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|connect/);
    expect(down.body.checks.database).toEqual({ status: 'fail', code: 'database_unreachable' });
    // The report is cached for a second: poll until it follows the outage.
    await expect.poll(async () => (await request(app).get('/health')).status, { timeout: 10_000, interval: 100 }).toBe(503);
    const health = await request(app).get('/health');
    expect(health.status).toBe(503);
    expect(health.headers['content-type']).toMatch(/^application\/health\+json/);
    expect(health.body.status).toBe('fail');
    expect(health.body.checks['database:responseTime'][0]).toMatchObject({ status: 'fail', output: 'database_unreachable' });
    // What the DatabaseUnavailable alert reads.
    expect(gauge((await request(app).get('/metrics')).text, 'database_answered')).toBe(0);

    await server.start();
    // Back once a new connection opens (each probe may give up on it after DB_CONNECTION_TIMEOUT_MS, 500 ms):
    // polled, 10 s being twenty such tries, so a busy machine makes this slower, never wrong.
    let up: request.Response | undefined;
    await expect.poll(async () => (up = await request(app).get('/readyz')).status, { timeout: 10_000, interval: 100 }).toBe(200);
    expect(up!.body.checks).toEqual({ database: { status: 'pass' }, migrations: { status: 'pass' } });
    expect((await request(app).get('/v1/account').set(auth)).status).toBe(200);
    expect(gauge((await request(app).get('/metrics')).text, 'database_answered')).toBe(1);
    // The charge refused during the outage stored nothing: the same key now runs as new.
    const retried = await request(app)
      .post('/v1/charges')
      .set(auth)
      .set('Idempotency-Key', key)
      .send({ amount: 100, currency: 'usd', source: 'tok_visa' });
    expect(retried.status).toBe(201);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
    await built.close();
    await simulator.close();
  });

  it('is not ready while a migration is pending: a stable code for the caller, the name in the log', async () => {
    const t = await createTestDatabase();
    const built = await buildApp(t);
    try {
      await sql`delete from kysely_migration where name = '0004_refunds'`.execute(t.db);
      const res = await request(built.app).get('/readyz');
      expect(res.status).toBe(503);
      expect(res.body.checks.migrations).toEqual({ status: 'fail', code: 'migrations_pending' });
      expect(res.text).not.toContain('0004_refunds');
      expect(built.logs.lines).toContainEqual(expect.objectContaining({ msg: 'not ready: migrations pending', missing: ['0004_refunds'] }));
    } finally {
      await built.close();
      await t.destroy();
    }
  });
});
