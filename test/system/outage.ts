// The world of the Postgres outage tests (database-outage*.test.ts, database-restart.test.ts): a cluster
// the test owns, a migrated database on it, an account, and the service as child processes; and the
// outage itself, run by runOutage. Each test file calls releaseOutageWorldAfterEach() once.
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, expect } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, type Db } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import { type LedgerEntry, type RunningSimulator, startSimulator } from '../../src/simulator/simulator.ts';
import { startTestCluster, type StopMode, type TestCluster } from '../helpers/cluster.ts';
import { type ChargeRow, chargeRows as chargeRowsOf, exactlyOnceFindings } from '../helpers/exactly-once.ts';
import { makeAccount } from '../helpers/factories.ts';
import { freePort } from '../helpers/ports.ts';
import {
  type ChargeAnswer,
  type ChargeOutcome,
  chargeUntilFinal,
  crashSummary,
  httpRequest,
  postCharge,
  type ServiceProcess,
  sleep,
  startService,
  stopAllServices,
  waitForReady,
  countBy,
  expectAlive,
  label,
  within,
} from '../helpers/processes.ts';

const REQUEST_TIMEOUT_MS = 2000;
/** A request without an answer after this long is a hang, and a failure. */
const CLIENT_TIMEOUT_MS = 3 * REQUEST_TIMEOUT_MS;
/** How long the cluster stays down, at least: the one deliberate wait of the test. */
const OUTAGE_MS = 5000;
const CLIENTS = 8;
const SUCCEEDED_BEFORE_OUTAGE = 10;
/** No key may still answer 409 this long after the database answers again (the issue's bound for a restart). */
const LOCKED_OUT_AFTER_RECOVERY_MS = 5000;
export const TEST_TIMEOUT_MS = 120_000;
export const TEST_APPLICATION = 'outage-test';

type Topology = 'all' | 'api+worker' | 'api';

// What one test owns; afterEach releases all of it, whatever happened.
export let cluster: TestCluster | undefined;
export let db: Db | undefined;
export let simulator: RunningSimulator | undefined;
let clients: { abort: AbortController; done: Promise<unknown> } | undefined;

export const report: string[] = [];

/** Registers this file's cleanup: after each test everything it started is released, whatever happened. */
export function releaseOutageWorldAfterEach() {
  afterEach(async () => {
    const steps: [string, () => Promise<unknown>][] = [
      [
        'client loops',
        async () => {
          clients?.abort.abort();
          await within(clients?.done ?? Promise.resolve(), 15_000);
        },
      ],
      ['service processes', () => stopAllServices(5000)],
      ['simulator', async () => simulator?.close()],
      ['test database handle', async () => within(db?.destroy() ?? Promise.resolve(), 5000)],
      ['cluster', async () => cluster?.destroy()],
    ];
    const problems: string[] = [];
    for (const [what, step] of steps) {
      await step().catch((err) => problems.push(`${what}: ${String(err)}`));
    }
    clients = undefined;
    simulator = undefined;
    db = undefined;
    cluster = undefined;
    if (problems.length) throw new Error(`cleanup failed: ${problems.join('; ')}`);
  });

  afterAll(() => {
    if (report.length) process.stdout.write(`\ndatabase outage:\n${report.map((l) => `  ${l}`).join('\n')}\n`);
    report.length = 0;
  });
}


interface World {
  databaseUrl: string;
  baseUrl: string;
  auth: Record<string, string>;
  accountId: string;
  services: ServiceProcess[];
  ledger(): Promise<LedgerEntry[]>;
}

/** A cluster of the test's own, a migrated database on it, an account, and the service as child processes. */
export async function startWorld(topology: Topology, extraEnv: Record<string, string> = {}): Promise<World> {
  cluster = await startTestCluster();
  const databaseUrl = await cluster.createDatabase();
  // The test's own connections carry a name, so terminating "the service's connections" can spare them.
  const testUrl = new URL(databaseUrl);
  testUrl.searchParams.set('application_name', TEST_APPLICATION);
  db = createDb(createPool(testUrl.toString(), loadConfig({}), createLogger('silent')));
  const { account, auth } = await makeAccount(db);
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const env: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    PORT: String(port),
    REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    DB_CONNECTION_TIMEOUT_MS: '1000',
    JOB_POLL_INTERVAL_SECONDS: '0.5',
    LOG_LEVEL: 'info',
    // The lease is the default one, what a request can take: a key cut off by the outage is free again
    // within seconds of the database's return, given back by its request or run out.
    COMPLETER_INTERVAL_SECONDS: '1',
    ...extraEnv,
  };
  let services: ServiceProcess[];
  let ledger: () => Promise<LedgerEntry[]>;
  if (topology === 'all') {
    const processorPort = await freePort();
    const processorUrl = `http://127.0.0.1:${processorPort}`;
    services = [startService('all', { ...env, PROCESSOR_PORT: String(processorPort), PROCESSOR_URL: processorUrl })];
    ledger = async () => {
      const res = await httpRequest('GET', `${processorUrl}/ledger`);
      expect(res.status, `GET ${processorUrl}/ledger`).toBe(200);
      return res.body.entries as LedgerEntry[];
    };
  } else {
    const sim = await startSimulator();
    simulator = sim;
    services = [startService('api', { ...env, PROCESSOR_URL: sim.url })];
    if (topology === 'api+worker') services.push(startService('worker', { ...env, PROCESSOR_URL: sim.url }));
    ledger = async () => [...sim.state.ledger];
  }
  await waitForReady(baseUrl, services[0]!);
  for (const worker of services.filter((s) => s.role === 'worker')) {
    await expect
      .poll(() => !worker.alive() || worker.lines.some((l) => /worker started/.test(String(l.msg))), {
        timeout: 30_000,
        interval: 100,
      })
      .toBe(true);
    expectAlive([worker]);
  }
  return { databaseUrl, baseUrl, auth, accountId: account.id, services, ledger };
}


/** Report lines for processes that died, with when, relative to the outage when there was one. */
export function deaths(services: ServiceProcess[], outageStart: number | undefined): string[] {
  return services
    .filter((s) => s.exitedAt() !== undefined)
    .map((s) => {
      const when = outageStart === undefined ? 'before the outage' : `${s.exitedAt()! - outageStart} ms after the cluster stop began`;
      return `${s.role} process pid ${s.pid} exited (code ${s.exit()!.code}, signal ${s.exit()!.signal}) ${when}: ${crashSummary(s.stderr) || '(no stderr)'}`;
    });
}

/** Why an answer breaks the contract, or undefined when it is allowed. */
export function violation(a: ChargeAnswer, duringOutage: boolean): string | undefined {
  if (a.error) return a.error.kind === 'timeout' ? `no answer within ${CLIENT_TIMEOUT_MS} ms (hang)` : `connection error (${a.error.message})`;
  if (a.status === 201 || a.status === 202) return undefined;
  if (a.status === 409 && a.code === 'idempotency_key_in_use') return undefined;
  if (a.status === 503 && (a.code === 'database_unavailable' || a.code === 'request_timeout')) {
    return a.retryAfter ? undefined : `${a.status} ${a.code} without Retry-After`;
  }
  if (!duringOutage && a.status === 503 && a.code === 'overloaded') return a.retryAfter ? undefined : '503 overloaded without Retry-After';
  return `${a.status} ${a.code ?? ''}`.trim();
}



/** A list of broken answers, readable in a failure message. */
function describeViolations(bad: { a: ChargeAnswer; why: string }[]): string {
  const examples = bad
    .slice(0, 8)
    .map(({ a, why }) => `  ${why}: key ${a.key} attempt ${a.attempt}, ${a.ms} ms${a.body ? `, body ${JSON.stringify(a.body).slice(0, 300)}` : ''}`);
  return `${bad.length} answer(s) outside the contract (${countBy(bad, (b) => b.why)}):\n${examples.join('\n')}`;
}

export const chargeBody = (n: number) => ({ amount: 100 + (n % 900), currency: 'usd', source: 'tok_visa', description: 'outage test' });

/**
 * The exactly-once checks (see exactly-once.ts), each a soft assertion so all are reported; the outage
 * clients retry until a final answer, so every accepted charge was told 201 or 202.
 */
function checkExactlyOnce(outcomes: ChargeOutcome[], rows: ChargeRow[], ledger: LedgerEntry[]) {
  for (const finding of exactlyOnceFindings(outcomes, rows, ledger)) expect.soft(finding.problems, finding.check).toEqual([]);
  const accepted = outcomes.filter((o) => o.final && (o.final.status === 201 || o.final.status === 202));
  return { accepted: accepted.length, ledgerCharges: ledger.filter((e) => e.type === 'charge').length };
}

export const chargeRows = (accountId: string) => chargeRowsOf(db!, accountId);

/**
 * The outage: clients keep charging, the cluster is stopped (fast or immediate shutdown) or frozen for at
 * least OUTAGE_MS and started again. No process may die, every answer must be one the contract allows,
 * and afterwards every charge a client saw accepted exists exactly once, here and at the processor.
 */
export async function runOutage({ topology, mode }: { topology: Topology; mode: StopMode | 'stall' }) {
  const name = `${topology}, ${mode} shutdown`;
  report.push(`${name}:`);
  const note = (line: string) => report.push(`  ${line}`);
  let services: ServiceProcess[] = [];
  let outageStart: number | undefined;
  try {
    const world = await startWorld(topology);
    services = world.services;
    const { baseUrl, auth } = world;
    const prefix = `${topology}-${mode}-${randomBytes(3).toString('hex')}`;

    // Clients: each keeps charging, one key per logical charge, retried with that key until final.
    const answers: ChargeAnswer[] = [];
    const outcomes: ChargeOutcome[] = [];
    const abort = new AbortController();
    for (const s of services) void s.exited.then(() => abort.abort());
    let stopping = false;
    const inFlight = new Set<string>();
    const loop = async (client: number) => {
      for (let n = 0; !stopping && !abort.signal.aborted; n += 1) {
        const key = `${prefix}-c${client}-${n}`;
        inFlight.add(key);
        const outcome = await chargeUntilFinal(baseUrl, auth, chargeBody(n), {
          key,
          maxTries: 1000,
          pauseMs: 100,
          timeoutMs: CLIENT_TIMEOUT_MS,
          signal: abort.signal,
          onAnswer: (a) => answers.push(a),
        });
        inFlight.delete(key);
        outcomes.push(outcome);
        if (!stopping) await sleep(50);
      }
    };
    const done = Promise.all(Array.from({ length: CLIENTS }, (_, i) => loop(i)));
    clients = { abort, done };

    const succeeded = () => outcomes.filter((o) => o.final?.status === 201).length;
    await expect
      .poll(() => (abort.signal.aborted ? -1 : succeeded()), { timeout: 30_000, interval: 50 })
      .toSatisfy((n: number) => n < 0 || n >= SUCCEEDED_BEFORE_OUTAGE);
    expectAlive(services);

    // The outage.
    const downAt = Date.now();
    outageStart = downAt;
    if (mode === 'stall') await cluster!.pause();
    else await cluster!.stop(mode);
    const stopMs = Date.now() - downAt;
    expect(await cluster!.answers(500), 'harness: the cluster still answers after stop()').toBe(false);
    const livez: number[] = [];
    const readyz: number[] = [];
    const probe = (path: string) =>
      httpRequest('GET', `${baseUrl}${path}`, { timeoutMs: CLIENT_TIMEOUT_MS }).then(
        (r) => r.status,
        () => 0,
      );
    while (Date.now() - downAt < OUTAGE_MS && !abort.signal.aborted) {
      const [live, ready] = await Promise.all([probe('/livez'), probe('/readyz')]);
      livez.push(live);
      readyz.push(ready);
      await sleep(250);
    }
    const startAt = Date.now();
    if (mode === 'stall') await cluster!.resume();
    else await cluster!.start();
    const upAt = Date.now();
    if (abort.signal.aborted) note(`outage cut short: a service process exited`);
    note(`cluster down ${upAt - downAt} ms (stop took ${stopMs} ms, start ${upAt - startAt} ms)`);
    note(`during the outage: /livez ${countBy(livez, String)}; /readyz ${countBy(readyz, String)}`);
    expectAlive(services);

    // Recovery: a new charge answers 201 again (or a process died, which fails just below).
    const probes: ChargeAnswer[] = [];
    await expect
      .poll(
        async () => {
          if (services.some((s) => !s.alive())) return 'a service process exited';
          const a = await postCharge(baseUrl, auth, chargeBody(probes.length), `${prefix}-probe-${probes.length}`, {
            timeoutMs: CLIENT_TIMEOUT_MS,
          });
          probes.push(a);
          answers.push(a);
          return a.status === 201 ? 'recovered' : label(a);
        },
        { timeout: 60_000, interval: 200 },
      )
      .toMatch(/^(recovered|a service process exited)$/);
    expectAlive(services);
    const recoveredMs = Date.now() - upAt;
    // And the clients' own traffic flows again: charges begun after the restart succeed.
    const succeededAfter = () =>
      outcomes.filter((o) => o.answers[0]!.startedAt > upAt && o.final?.status === 201).length;
    await expect
      .poll(() => (abort.signal.aborted ? -1 : succeededAfter()), { timeout: 30_000, interval: 50 })
      .toSatisfy((n: number) => n < 0 || n >= CLIENTS);
    expectAlive(services);

    // Stop the clients; every logical charge in flight still gets its final answer (retry rule).
    stopping = true;
    const stopped = await within(done, 60_000);
    expect(stopped, `harness: client loops still retrying 60 s after stop: ${[...inFlight].join(', ')}`).toBe(true);
    // Probes that did not get a final answer are charges too: finish them with their own keys.
    for (const [i, p] of probes.entries()) {
      const outcome =
        p.status === 201 || p.status === 202
          ? { key: p.key, final: p, answers: [p] }
          : await chargeUntilFinal(baseUrl, auth, chargeBody(i), {
              key: p.key,
              maxTries: 600,
              pauseMs: 100,
              timeoutMs: CLIENT_TIMEOUT_MS,
              onAnswer: (a) => answers.push(a),
            });
      outcomes.push(outcome);
    }
    expectAlive(services);

    const during = (a: ChargeAnswer) => a.endedAt >= downAt && a.startedAt <= upAt;
    const outageAnswers = answers.filter(during);
    const slowest = (list: ChargeAnswer[]) => list.reduce((m, a) => Math.max(m, a.ms), 0);
    note(`${outcomes.length} logical charges, ${answers.length} answers; finals ${countBy(outcomes, (o) => (o.final ? label(o.final) : `gave up (${o.gaveUp})`))}`);
    note(`answers during the outage: ${countBy(outageAnswers, label)}`);
    note(`slowest answer: ${slowest(outageAnswers)} ms during the outage, ${slowest(answers)} ms overall; first 201 ${recoveredMs} ms after the restart`);

    const bad = answers.map((a) => ({ a, why: violation(a, during(a)) })).filter((b): b is { a: ChargeAnswer; why: string } => !!b.why);
    expect.soft(bad.length, describeViolations(bad)).toBe(0);
    // No client locked out of its own key once the database is back.
    // A 409 is a lock-out when the key can only be held by a request from before the database came back:
    // no attempt with that key began after it (one that did, and ran past its deadline on a busy machine,
    // holds its key for its own lease, as it should).
    const claimedSinceRecovery = (a: ChargeAnswer) =>
      answers.some((b) => b.key === a.key && b.attempt < a.attempt && b.startedAt >= upAt && b.status !== 409);
    const lockedOut = answers.filter(
      (a) => a.status === 409 && a.startedAt > upAt + LOCKED_OUT_AFTER_RECOVERY_MS && !claimedSinceRecovery(a),
    );
    const inUse = answers.filter((a) => a.status === 409).map((a) => a.startedAt - upAt);
    const last = inUse.length ? Math.max(...inUse) : undefined;
    note(`409 answers: ${inUse.length}${last === undefined ? '' : last < 0 ? ', none after the database was back' : `, the last ${last} ms after the database was back`}`);
    expect
      .soft(lockedOut.map((a) => `${a.key} attempt ${a.attempt}, ${a.startedAt - upAt} ms after`), `keys still in use ${LOCKED_OUT_AFTER_RECOVERY_MS} ms after the database was back`)
      .toEqual([]);
    expect.soft(outageAnswers.length, 'answers recorded during the outage').toBeGreaterThan(0);
    expect.soft(livez.length > 0 && livez.every((s) => s === 200), `/livez during the outage: ${livez.join(' ')}`).toBe(true);
    expect.soft(readyz.length > 0 && readyz.every((s) => s === 503), `/readyz during the outage: ${readyz.join(' ')}`).toBe(true);
    const unfinished = outcomes.filter((o) => !o.final || ![201, 202].includes(o.final.status));
    expect
      .soft(unfinished.map((o) => `${o.key}: ${o.final ? label(o.final) : `gave up (${o.gaveUp}) after ${o.answers.length} tries`}`), 'logical charges without a final 201/202')
      .toEqual([]);

    // Pending charges settle (worker); then the database and the processor must agree, exactly once.
    await expect
      .poll(async () => (await chargeRows(world.accountId)).filter((r) => r.status === 'pending').length, {
        timeout: 60_000,
        interval: 250,
        message: 'charges still pending 60 s after recovery',
      })
      .toBe(0);
    const rows = await chargeRows(world.accountId);
    const ledger = await world.ledger();
    const { accepted, ledgerCharges } = checkExactlyOnce(outcomes, rows, ledger);
    note(`charges rows ${rows.length} (${countBy(rows, (r) => r.status)}), accepted by clients ${accepted}, processor ledger charges ${ledgerCharges}`);
    expectAlive(services);

    // The outage is logged as one event by every process, not once per request, connection or
    // attempt; a lost connection is one short line with its code, never a dump of the driver's client.
    // (On a saturated machine a connection can also time out outside the outage: such an event is logged
    // too, rightly, and reported here, but it is not this outage.)
    const UNAVAILABLE = 'database unavailable: requests answer 503, background work waits and retries';
    const REACHABLE = 'database reachable again: requests and background work resume';
    for (const s of services) {
      const outageLines = () =>
        s.lines
          .filter((l) => l.msg === UNAVAILABLE || l.msg === REACHABLE)
          .map((l) => ({ at: Date.parse(String(l.time)), down: l.msg === UNAVAILABLE, text: `${String(l.time)} ${String(l.msg).split(':')[0]} ${l.where ?? ''} ${l.code ?? ''} ${String(l.reason ?? '')}` }));
      const lines = outageLines();
      const shown = `${s.role}: outage lines (cluster down ${new Date(downAt).toISOString()}, up ${new Date(upAt).toISOString()})\n${lines.map((l) => l.text).join('\n')}`;
      // A stalled server fails nothing by itself: work caught in the stall reports when its own bound ends,
      // which can be just after the stall is lifted (a connect begun in it times out after a second, a
      // statement at its read timeout, the deadline plus a second). Such a line still reports this outage.
      const reportedBy = mode === 'stall' ? upAt + REQUEST_TIMEOUT_MS + 1000 : upAt;
      const inOutage = lines.filter((l) => l.at >= downAt && l.at <= reportedBy);
      expect.soft(inOutage.filter((l) => l.down).length, `${shown}\nat most one 'unavailable' line for the outage`).toBeLessThanOrEqual(1);
      const untilReported = lines.filter((l) => l.at <= upAt || (l.down && l.at <= reportedBy));
      expect.soft(untilReported.at(-1)?.down, `${shown}\nthe last line before the cluster was back (or its stall reported) says it is unavailable`).toBe(true);
      const elsewhere = lines.filter((l) => l.down && (l.at < downAt || l.at > reportedBy));
      if (elsewhere.length) note(`${s.role}: ${elsewhere.length} 'unavailable' line(s) outside the outage: ${elsewhere.map((l) => l.text).join('; ')}`);
      await expect
        .poll(() => outageLines().some((l) => !l.down && l.at > upAt), { timeout: 30_000, message: `${s.role}: recovery line` })
        .toBe(true);
      const stacks = s.lines.filter((l) => /"stack"/.test(JSON.stringify(l)));
      expect.soft(stacks.map((l) => String(l.msg)), `${s.role}: lines with a stack trace`).toEqual([]);
    }
    for (const s of services) {
      const lost = s.lines.filter((l) => l.msg === 'database connection lost');
      note(`${s.role}: ${lost.length} 'database connection lost' line(s), longest ${Math.max(0, ...lost.map((l) => JSON.stringify(l).length))} characters`);
      for (const l of lost) expect.soft(JSON.stringify(l).length, JSON.stringify(l).slice(0, 400)).toBeLessThan(400);
      for (const l of lost) expect.soft(l.code, JSON.stringify(l)).toEqual(expect.any(String));
    }
  } catch (err) {
    for (const line of deaths(services, outageStart)) note(line);
    note(`FAILED: ${String((err as Error).message ?? err).split('\n')[0]}`);
    throw err;
  } finally {
    clients?.abort.abort();
  }
}
