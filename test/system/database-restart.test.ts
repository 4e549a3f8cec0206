// Restarts and terminated connections at exact moments of one charge, for real, on a cluster the test owns:
// the service runs as a child process, and each case checks the one charge exactly once, here and at the
// processor.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { chargeUntilFinal, expectAlive, httpRequest, label, postCharge, type ServiceProcess } from '../helpers/processes.ts';
import {
  chargeBody,
  chargeRows,
  cluster,
  db,
  deaths,
  releaseOutageWorldAfterEach,
  report,
  simulator,
  startWorld,
  TEST_APPLICATION,
  TEST_TIMEOUT_MS,
  violation,
} from './outage.ts';

releaseOutageWorldAfterEach();

/**
 * A deadline and a processor attempt timeout far above the simulator's latency in these cases, and a
 * client that waits for them: however busy the machine, the charge gets its processor's answer and
 * reaches the step each case breaks (with 2 s and 1.5 s, a loaded machine let the attempt time out first:
 * a 202 pending, not the case under test).
 */
const UNHURRIED = { REQUEST_TIMEOUT_MS: '8000', PROCESSOR_ATTEMPT_TIMEOUT_MS: '6000' };
const UNHURRIED_CLIENT_MS = 30_000;

describe('a Postgres restart or lost connections mid-charge', () => {
  it(
    'a restart while a charge is at the processor: its request gives its key back as soon as the database answers, long before the lease runs out',
    async () => {
      report.push('restart mid-charge, lease given back (api process):');
      const note = (line: string) => report.push(`  ${line}`);
      // A lease far longer than the test may take: a key freed within it was given back, not run out.
      const LEASE_SECONDS = 120;
      const world = await startWorld('api', {
        ...UNHURRIED,
        IDEMPOTENCY_LEASE_SECONDS: String(LEASE_SECONDS),
      });
      const sim = simulator!;
      const { baseUrl, auth } = world;
      const key = `restart-lease-${randomBytes(4).toString('hex')}`;
      const body = chargeBody(2);
      const lease = async () =>
        (await db!.selectFrom('idempotency_keys').select(['locked_at', 'recovery_point']).where('key', '=', key).executeTakeFirst()) ?? null;

      await httpRequest('PUT', `${sim.url}/chaos`, { body: { mode: 'slow', latency_ms: 3000, jitter_ms: 0 } });
      const before = sim.state.requests.charges;
      const first = postCharge(baseUrl, auth, body, key, { timeoutMs: 30_000 });
      await expect.poll(() => sim.state.requests.charges, { timeout: 10_000, interval: 10 }).toBe(before + 1);
      // The key is claimed and the processor is answering slowly: the database goes away under the request.
      await cluster!.stop('fast');
      const firstAnswer = await first;
      note(`first answer with the database down: ${label(firstAnswer)}`);
      expect(firstAnswer.status).toBe(503);
      expect(firstAnswer.code).toBe('database_unavailable');
      expect(firstAnswer.body?.detail).toMatch(/outcome is unknown/);
      await httpRequest('PUT', `${sim.url}/chaos`, { body: { mode: 'healthy' } });

      await cluster!.start();
      const upAt = Date.now();
      await expect
        .poll(async () => (await lease().catch(() => undefined))?.locked_at ?? null, {
          timeout: 30_000,
          interval: 100,
          message: `the key is still leased: not given back after the database came back (lease ${LEASE_SECONDS} s)`,
        })
        .toBeNull();
      note(`key given back ${Date.now() - upAt} ms after the database answered again (lease ${LEASE_SECONDS} s)`);

      const retried = await chargeUntilFinal(baseUrl, auth, body, { key, maxTries: 100, pauseMs: 100, timeoutMs: 30_000 });
      note(`same-key retries: ${retried.answers.map(label).join(', ')}`);
      expect(retried.answers.map(label)).toEqual(['201']);
      const rows = await chargeRows(world.accountId);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ status: 'succeeded', recovery_point: 'finished', locked_at: null });
      const ledger = sim.state.ledger.filter((e) => e.idempotency_key === rows[0]!.processor_idempotency_key);
      expect(ledger).toHaveLength(1);
      expectAlive(world.services);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'pg_terminate_backend of every service connection mid-charge: the same-key retry completes it once',
    async () => {
      report.push('pg_terminate_backend mid-charge (api process):');
      const note = (line: string) => report.push(`  ${line}`);
      let services: ServiceProcess[] = [];
      try {
        const world = await startWorld('api', UNHURRIED);
        services = world.services;
        const sim = simulator!;
        const { baseUrl, auth } = world;
        const key = `terminate-${randomBytes(4).toString('hex')}`;
        const body = chargeBody(1);

        const chaos = await httpRequest('PUT', `${sim.url}/chaos`, { body: { mode: 'slow', latency_ms: 1000, jitter_ms: 0 } });
        expect(chaos.status).toBe(200);
        const before = sim.state.requests.charges;
        const first = postCharge(baseUrl, auth, body, key, { timeoutMs: UNHURRIED_CLIENT_MS });
        await expect.poll(() => sim.state.requests.charges, { timeout: 10_000, interval: 10 }).toBe(before + 1);
        const terminated = await cluster!.terminateBackends(world.databaseUrl, { sparing: TEST_APPLICATION });
        note(`charge in flight at the processor; pg_terminate_backend ended ${terminated} service connection(s)`);
        expect(terminated, 'harness: the service had no connection to terminate').toBeGreaterThan(0);
        await httpRequest('PUT', `${sim.url}/chaos`, { body: { mode: 'healthy' } });

        const firstAnswer = await first;
        const retried = await chargeUntilFinal(baseUrl, auth, body, { key, maxTries: 100, pauseMs: 100, timeoutMs: UNHURRIED_CLIENT_MS });
        note(`first request: ${label(firstAnswer)} in ${firstAnswer.ms} ms; same-key retries: ${retried.answers.map(label).join(', ')}`);
        expectAlive(services);
        for (const a of [firstAnswer, ...retried.answers]) {
          expect.soft(violation(a, false), `answer ${label(a)} to key ${a.key}`).toBeUndefined();
        }
        expect(retried.final?.status, 'final answer of the same-key retry').toBe(201);

        const rows = await chargeRows(world.accountId);
        expect(rows).toHaveLength(1);
        const row = rows[0]!;
        expect(row).toMatchObject({ id: retried.final!.body?.id, status: 'succeeded', client_key: key, recovery_point: 'finished', locked_at: null });
        const ledger = sim.state.ledger.filter((e) => e.type === 'charge');
        expect(ledger).toHaveLength(1);
        expect(ledger[0]!.idempotency_key === row.processor_idempotency_key, `ledger key ${ledger[0]!.idempotency_key} vs ${row.processor_idempotency_key}`).toBe(true);
        expect(ledger[0]!.id).toBe(row.processor_reference);
        note(`charges rows ${rows.length}, processor ledger charges ${ledger.length}, key ${row.recovery_point}, api alive`);
        expectAlive(services);
      } catch (err) {
        for (const line of deaths(services, undefined)) note(line);
        note(`FAILED: ${String((err as Error).message ?? err).split('\n')[0]}`);
        throw err;
      }
    },
    TEST_TIMEOUT_MS,
  );
  it(
    'pg_terminate_backend while the outcome phase waits on a row lock: 503 says the outcome is unknown, the same-key retry completes it once',
    async () => {
      report.push('pg_terminate_backend inside the outcome transaction (api process):');
      const note = (line: string) => report.push(`  ${line}`);
      const world = await startWorld('api', UNHURRIED);
      const sim = simulator!;
      const { baseUrl, auth } = world;
      const key = `terminate-locked-${randomBytes(4).toString('hex')}`;
      const body = chargeBody(1);
      const locker = new pg.Client({ connectionString: world.databaseUrl, application_name: TEST_APPLICATION });
      await locker.connect();
      try {
        await httpRequest('PUT', `${sim.url}/chaos`, { body: { mode: 'slow', latency_ms: 500, jitter_ms: 0 } });
        const before = sim.state.requests.charges;
        const first = postCharge(baseUrl, auth, body, key, { timeoutMs: UNHURRIED_CLIENT_MS });
        await expect.poll(() => sim.state.requests.charges, { timeout: 10_000, interval: 10 }).toBe(before + 1);
        // The key row is committed by now (phase 1); holding its lock parks phase 3 inside its transaction.
        await locker.query('begin');
        await locker.query('select id from idempotency_keys where key = $1 for update', [key]);
        await expect
          .poll(
            async () =>
              (
                await locker.query(
                  `select count(*)::int as n from pg_stat_activity
                   where datname = current_database() and application_name <> $1 and wait_event_type = 'Lock'`,
                  [TEST_APPLICATION],
                )
              ).rows[0].n,
            { timeout: 10_000, interval: 20 },
          )
          .toBe(1);
        const terminated = await cluster!.terminateBackends(world.databaseUrl, { sparing: TEST_APPLICATION });
        await locker.query('rollback');
        const firstAnswer = await first;
        note(`phase 3 waiting on the key's row lock; pg_terminate_backend ended ${terminated} connection(s); first answer ${label(firstAnswer)}`);
        expect(firstAnswer.status).toBe(503);
        expect(firstAnswer.code).toBe('database_unavailable');
        expect(firstAnswer.body?.detail).toMatch(/outcome is unknown.*same Idempotency-Key/);

        const retried = await chargeUntilFinal(baseUrl, auth, body, { key, maxTries: 100, pauseMs: 100, timeoutMs: UNHURRIED_CLIENT_MS });
        note(`same-key retries: ${retried.answers.map(label).join(', ')}`);
        expect(retried.final?.status).toBe(201);
        expectAlive(world.services);
        const rows = await chargeRows(world.accountId);
        expect(rows).toHaveLength(1);
        expect(rows[0]).toMatchObject({ status: 'succeeded', recovery_point: 'finished', locked_at: null });
        const ledger = sim.state.ledger.filter((e) => e.idempotency_key === rows[0]!.processor_idempotency_key);
        expect(ledger).toHaveLength(1);
        expect(ledger[0]!.id).toBe(rows[0]!.processor_reference);
        note(`charges rows ${rows.length}, processor ledger entries for its key ${ledger.length}, api alive`);
      } finally {
        await locker.end().catch(() => undefined);
      }
    },
    TEST_TIMEOUT_MS,
  );
});
