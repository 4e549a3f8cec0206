// Issue 18: deleting webhook endpoints while their deliveries are being recorded. A delete and a delivery
// both lock the endpoint and the delivery; taken in opposite orders they deadlock (40P01), and the delete
// answered 500. Here a real worker delivers charges' events to a real receiver, which deletes each
// endpoint as its first delivery arrives, so every delete races the recording of a delivery to it while
// charges keep fanning out to the endpoints being deleted. Postgres's own count of deadlocks is checked
// too: a retry of 40P01 elsewhere would hide the 500s, not a lock order that still deadlocks.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { type RawBuilder, sql } from 'kysely';
import type pg from 'pg';
import request from 'supertest';
import { afterEach, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createPool } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { type RunningSimulator, startSimulator } from '../../src/simulator/simulator.ts';
import { buildApp, type BuiltApp } from '../helpers/app.ts';
import { charge, FAST_JOBS, newKey } from '../helpers/context.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { makeAccount } from '../helpers/factories.ts';

const ACCOUNTS = 6;
const ENDPOINTS_PER_ACCOUNT = 6; // 36 endpoints, each deleted twice: 72 deletes
const CHARGE_EVERY_NTH_DELETE = 4;
const APP_NAME = 'endpoints-under-load';

let t: TestDatabase | undefined;
let simulator: RunningSimulator | undefined;
let receiver: http.Server | undefined;
let pool: pg.Pool | undefined;
let built: BuiltApp | undefined;
afterEach(async () => {
  await built?.close();
  await pool?.end();
  receiver?.closeAllConnections();
  receiver?.close();
  await simulator?.close();
  await t?.destroy();
  t = simulator = receiver = pool = built = undefined;
});

const count = async (db: TestDatabase['db'], query: RawBuilder<{ n: number }>) => (await query.execute(db)).rows[0]!.n;
const deadlocks = sql<{ n: number }>`select deadlocks::int as n from pg_stat_database where datname = current_database()`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

it('deletes endpoints while their deliveries are recorded and charges fan out to them: each answers 200 or 404, no deadlock', { timeout: 60_000 }, async () => {
  t = await createTestDatabase();
  simulator = await startSimulator();
  const env = {
    ...FAST_JOBS,
    PROCESSOR_URL: simulator.url,
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    WEBHOOK_RETRY_DELAY_MS: '50',
    WEBHOOK_RETRY_DELAY_MAX_MS: '100',
    JOB_CONCURRENCY: '8',
  };
  // Named, so the test can wait for its connections to be gone: a backend's counters reach
  // pg_stat_database when it exits, not when its transaction ends.
  const url = new URL(t.url);
  url.searchParams.set('application_name', APP_NAME);
  pool = createPool(url.toString(), loadConfig(env), createLogger('silent'));
  built = await buildApp({ pool }, env);
  const { app } = built;

  // The receiver: each endpoint's first delivery sets off its delete, answered a moment later (200, or
  // now and then 500 so the retry path is recorded too), as the worker is about to record the attempt.
  const accounts = await Promise.all(Array.from({ length: ACCOUNTS }, () => makeAccount(t!.db)));
  const endpoints: { id: string; auth: Record<string, string> }[] = [];
  const deleting: boolean[] = [];
  const deletes: Promise<number>[] = [];
  let received = 0;
  const charges: Promise<number>[] = [];
  const pay = (auth: Record<string, string>) =>
    request(app).post('/v1/charges').set(auth).set('Idempotency-Key', newKey()).send(charge()).then((r) => r.status);
  receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      received += 1;
      const n = Number(req.url!.split('/').at(-1));
      const endpoint = endpoints[n]!;
      if (!deleting[n]) {
        deleting[n] = true;
        // Twice at once: one deletes it (200), the other finds it gone (404).
        for (let i = 0; i < 2; i++) deletes.push(request(app).delete(`/v1/webhook_endpoints/${endpoint.id}`).set(endpoint.auth).then((r) => r.status));
        // Now and then a charge of the same account finishes meanwhile, fanning out to endpoints being deleted.
        if (n % CHARGE_EVERY_NTH_DELETE === 0) charges.push(pay(endpoint.auth));
      }
      setTimeout(() => res.writeHead(received % 5 ? 200 : 500).end(), Math.random() * 20);
    });
  });
  receiver.listen(0, '127.0.0.1');
  await new Promise((resolve) => receiver!.once('listening', resolve));
  const base = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks`;

  // Accounts side by side: an account's creates are serialised by its own lock.
  await Promise.all(
    accounts.map(async ({ auth }, a) => {
      for (let i = 0; i < ENDPOINTS_PER_ACCOUNT; i++) {
        const n = a * ENDPOINTS_PER_ACCOUNT + i;
        const res = await request(app).post('/v1/webhook_endpoints').set(auth).set('Idempotency-Key', newKey()).send({ url: `${base}/${n}`, enabled_events: ['*'] });
        expect(res.status).toBe(201);
        endpoints[n] = { id: res.body.id, auth };
      }
    }),
  );
  const before = await count(t.db, deadlocks);
  const worker = built.service.worker();
  await worker.start();

  // A charge per account, one after another, paced to what the worker delivers, until every endpoint is
  // deleted: each one's deliveries set off its account's deletes.
  const started = Date.now();
  for (let a = 0; deletes.length < 2 * endpoints.length && Date.now() - started < 40_000; a++) {
    if (a < ACCOUNTS) charges.push(pay(accounts[a]!.auth));
    await sleep(100);
  }
  const answers = await Promise.all(deletes);
  const paid = await Promise.all(charges);

  await worker.stop();
  await built.close();
  await pool.end();
  built = pool = undefined;
  const appConnections = sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where application_name = ${APP_NAME}`;
  await expect.poll(() => count(t!.db, appConnections), { timeout: 10_000, interval: 100 }).toBe(0);

  const statuses: Record<number, number> = {};
  for (const status of answers) statuses[status] = (statuses[status] ?? 0) + 1;
  const found = { deletes: answers.length, statuses, deadlocks: (await count(t.db, deadlocks)) - before };
  console.log(`endpoints under load: ${JSON.stringify(found)}, ${charges.length} charges, ${received} deliveries received, ${Date.now() - started} ms`);
  expect(found).toEqual({ deletes: 2 * endpoints.length, statuses: { 200: endpoints.length, 404: endpoints.length }, deadlocks: 0 });
  // Each charge succeeded, or answered 202 pending when the loaded processor was slow: none failed.
  expect(paid.filter((status) => status !== 201 && status !== 202)).toEqual([]);
  // Each delete took its endpoint's deliveries with it: nothing is left to retry for an endpoint that is gone.
  expect(await count(t.db, sql`select count(*)::int as n from webhook_endpoints`)).toBe(0);
  expect(await count(t.db, sql`select count(*)::int as n from webhook_deliveries`)).toBe(0);
});
