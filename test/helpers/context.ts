// A test file's world: its own database, its own processor simulator over HTTP, and the app built on both.
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import type { Chaos, LedgerEntry } from '../../src/simulator/simulator.ts';
import { type RunningSimulator, startSimulator } from '../../src/simulator/simulator.ts';
import { loadConfig } from '../../src/config.ts';
import { createPool } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import type { Worker } from '../../src/worker.ts';
import { type BuiltApp, buildApp } from './app.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';
import { makeAccount } from './factories.ts';
import { type Gate, startGate } from './gate.ts';

export interface TestContext extends BuiltApp {
  t: TestDatabase;
  simulator: RunningSimulator;
  setChaos(chaos: Partial<Chaos> & { mode: Chaos['mode'] }): Promise<void>;
  ledger(): Promise<{
    entries: LedgerEntry[];
    requests: { charges: number; refunds: number; lookups: number; voids: number };
    voided: { type: string; idempotency_key: string }[];
  }>;
  account(): ReturnType<typeof makeAccount>;
  /** Starts this context's worker (settle jobs, completer, reaper); destroy() stops it. */
  startWorker(): Promise<Worker>;
  destroy(): Promise<void>;
}

export async function createTestContext(env: Record<string, string> = {}): Promise<TestContext> {
  return buildTestContext(env, false);
}

/**
 * A test context whose every processor call passes through a gate in front of its simulator (open at
 * first): `gate.hold()` keeps the calls in flight exactly as long as the test wants, with no timing guess.
 * setChaos() and ledger() still reach the simulator itself.
 */
export async function createGatedTestContext(env: Record<string, string> = {}): Promise<TestContext & { gate: Gate }> {
  const ctx = await buildTestContext(env, true);
  return { ...ctx, gate: ctx.gate! };
}

async function buildTestContext(env: Record<string, string>, gated: boolean): Promise<TestContext & { gate?: Gate }> {
  const t = await createTestDatabase();
  const simulator = await startSimulator();
  const gate = gated ? await startGate(simulator.url) : undefined;
  gate?.open();
  // One job fetch loop per queue unless a test asks for more (see FAST_JOBS): each loop also holds a
  // connection while it polls, and five per queue made a worker context open a dozen that no test needed.
  const settings = { JOB_CONCURRENCY: '1', PROCESSOR_URL: gate?.url ?? simulator.url, ...env };
  // The app gets a pool of its own, built from the same settings, so DB_* variables take effect.
  const pool = createPool(t.url, loadConfig(settings), createLogger('silent'));
  const built = await buildApp({ pool }, settings);
  const workers: Worker[] = [];
  return {
    ...built,
    t,
    simulator,
    gate,
    async setChaos(chaos) {
      const res = await request(simulator.url).put('/chaos').send(chaos);
      if (res.status !== 200) throw new Error(`chaos not set: ${res.text}`);
    },
    async ledger() {
      return (await request(simulator.url).get('/ledger')).body;
    },
    account: () => makeAccount(t.db),
    async startWorker() {
      const worker = built.service.worker();
      await worker.start();
      workers.push(worker);
      return worker;
    },
    async destroy() {
      for (const worker of workers) await worker.stop();
      await built.close();
      await pool.end();
      await gate?.close();
      await simulator.close();
      await t.destroy();
    },
  };
}

/**
 * Background work at test speed: one processor attempt per call, jobs and passes every second or faster,
 * and a circuit breaker that forgets a failure and probes again within a second (the default 10 s window
 * and reset would hold a test's settle attempts back for 10 s after the processor it took down is back).
 * That one attempt gets most of the 5 s deadline: an answering processor never takes a fraction of it,
 * however busy the machine, so a test that expects 201 never meets a timed-out attempt (202) instead.
 */
export const FAST_JOBS = {
  // One fetch loop per queue: each loop polls on its own, and five per queue (the default) cost an idle
  // test context a tenth of a core, Postgres included. Loops drain back to back while jobs are ready.
  JOB_CONCURRENCY: '1',
  PROCESSOR_MAX_ATTEMPTS: '1',
  PROCESSOR_ATTEMPT_TIMEOUT_MS: '4000',
  BREAKER_ROLLING_WINDOW_MS: '1000',
  BREAKER_RESET_TIMEOUT_MS: '1000',
  JOB_POLL_INTERVAL_SECONDS: '0.5',
  SETTLE_RETRY_DELAY_SECONDS: '1',
  SETTLE_RETRY_DELAY_MAX_SECONDS: '1',
  RECONCILE_INTERVAL_SECONDS: '1',
  SWEEP_INTERVAL_SECONDS: '1',
  COMPLETER_INTERVAL_SECONDS: '1',
};

export const newKey = () => `key-${randomUUID()}`;

export const charge = (overrides: Record<string, unknown> = {}) => ({
  amount: 1000,
  currency: 'usd',
  source: 'tok_visa',
  ...overrides,
});

/** POST /v1/charges with the given auth, key (omitted when null) and body. */
export function postCharge(
  ctx: TestContext,
  auth: Record<string, string>,
  key: string | null,
  body: unknown = charge(),
) {
  const req = request(ctx.app).post('/v1/charges').set(auth);
  if (key !== null) req.set('Idempotency-Key', key);
  return req.send(body as object);
}

/** The processor's ledger entries made with exactly this idempotency key. */
export function ledgerFor(entries: LedgerEntry[], processorKey: string) {
  return entries.filter((e) => e.idempotency_key === processorKey);
}

/**
 * The processor idempotency key the service derives from one of our idempotency key rows: what it sends the
 * processor for the charge or refund that key row made. The one place the tests spell the format out.
 */
export const processorKeyFor = (kind: 'charge' | 'refund', idempotencyKeyId: string) => `${kind}_${idempotencyKeyId}`;

/** The processor idempotency key of a charge or refund, as the ledger records it. */
export async function processorKeyOf(ctx: TestContext, table: 'charges' | 'refunds', id: string) {
  const row = await ctx.t.db
    .selectFrom(table as 'charges')
    .select('processor_idempotency_key')
    .where('id', '=', id)
    .executeTakeFirstOrThrow();
  return row.processor_idempotency_key;
}

/** A metric's value in the app's /metrics text (0 when absent). */
export async function metricValue(ctx: TestContext, series: string): Promise<number> {
  const text = (await request(ctx.app).get('/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/** The charge as the API shows it now. */
export async function readCharge(ctx: TestContext, auth: Record<string, string>, id: string) {
  return (await request(ctx.app).get(`/v1/charges/${id}`).set(auth)).body;
}

export async function countRows(ctx: TestContext, accountId: string) {
  const [keys, charges] = await Promise.all([
    ctx.t.db.selectFrom('idempotency_keys').select('id').where('account_id', '=', accountId).execute(),
    ctx.t.db.selectFrom('charges').select('id').where('account_id', '=', accountId).execute(),
  ]);
  return { keys: keys.length, charges: charges.length };
}
