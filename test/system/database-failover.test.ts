// A failover, for real: the service (api, worker and the processor simulator, each a process of its own)
// runs against a primary with a synchronous standby, through a TCP proxy standing where a virtual IP or
// HAProxy would. Clients keep charging, each retrying its own Idempotency-Key until a final answer. The
// primary dies (immediate shutdown), the standby is promoted and the proxy switched to it, ending every
// session. Once the new primary takes writes, every charge must reach its final answer within a bound
// that follows from the configuration (the default idempotency lease is what is under test: it is not
// set here), no answer may be a 500, nothing may be lost or doubled between our database and the
// processor's ledger, no process may exit, and no key may be left leased.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, type Db } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import type { LedgerEntry } from '../../src/simulator/simulator.ts';
import { chargeRows, exactlyOnceFindings, lockedKeys, pendingCharges, type PendingCharge } from '../helpers/exactly-once.ts';
import { makeAccount } from '../helpers/factories.ts';
import { freePort } from '../helpers/ports.ts';
import {
  type ChargeAnswer,
  type ChargeOutcome,
  chargeUntilFinal,
  crashSummary,
  httpRequest,
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
import { type PrimaryWithStandby, startPrimaryWithStandby } from '../helpers/standby.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

// Long enough that the default lease (the deadline plus 2 s: 22 s) outlasts the failover by far, so a key
// freed within FINAL_BOUND_MS was given back by the request that lost its database, not run out.
const REQUEST_TIMEOUT_MS = 20_000;
/** The lease the service derives from its deadline when IDEMPOTENCY_LEASE_SECONDS is unset. */
const LEASE_MS = REQUEST_TIMEOUT_MS + 2000;
const DB_CONNECTION_TIMEOUT_MS = 1000;
/** A request without an answer after this long is a hang. */
const CLIENT_TIMEOUT_MS = 3 * REQUEST_TIMEOUT_MS;
const CLIENT_PAUSE_MS = 100;
const CLIENTS = 8;
const SUCCEEDED_BEFORE_FAILOVER = 10;
/** Processor latency: requests are mid-charge (their key claimed, the processor called) when the primary dies. */
const PROCESSOR_LATENCY_MS = 200;
/**
 * How long after the new primary takes writes every charge has its final answer, at most: the target the
 * service is held to. A request cut off by the failover gives its key back within a second of the database
 * answering again (it retries the release until then), and the same-key retry then completes the charge
 * in one short request. Half the default lease (11 s: seconds of margin on a busy machine), so a key
 * that waited for its lease to run out fails it.
 * A charge begun after the new primary took writes has the same bound from its own start.
 */
const FINAL_BOUND_MS = LEASE_MS / 2;
/** Pending charges with a live settle job get this long to settle (the first retry comes after 2 s, doubling). */
const SETTLE_BOUND_MS = 30_000;
const TEST_TIMEOUT_MS = 150_000;

// What the test owns; afterEach releases all of it, whatever happened.
let pair: PrimaryWithStandby | undefined;
let proxy: TcpProxy | undefined;
let db: Db | undefined;
let clients: { abort: AbortController; done: Promise<unknown> } | undefined;

const report: string[] = [];
const note = (line: string) => report.push(`  ${line}`);

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
    ['test database handle', async () => within(db?.destroy() ?? Promise.resolve(), 5000)],
    ['proxy', async () => proxy?.close()],
    ['clusters', async () => pair?.destroy()],
  ];
  const problems: string[] = [];
  for (const [what, step] of steps) await step().catch((err) => problems.push(`${what}: ${String(err)}`));
  clients = undefined;
  db = undefined;
  proxy = undefined;
  pair = undefined;
  if (problems.length) throw new Error(`cleanup failed: ${problems.join('; ')}`);
});

afterAll(() => {
  if (report.length) process.stdout.write(`\ndatabase failover:\n${report.join('\n')}\n`);
});


/** Polls `condition` every `intervalMs` until it holds or `ms` passed; returns whether it held. */
async function until(condition: () => boolean | Promise<boolean>, ms: number, intervalMs = 50): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() > end) return false;
    await sleep(intervalMs);
  }
}


const seconds = (ms: number) => `${ms >= 0 ? '+' : ''}${(ms / 1000).toFixed(1)} s`;
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
/** "1.4 s before the primary died", "0.3 s after the new primary took writes". */
const relative = (ms: number, event: string) => `${(Math.abs(ms) / 1000).toFixed(1)} s ${ms < 0 ? 'before' : 'after'} ${event}`;


/** Runs of the same answer, with their times relative to `t0`: "409 idempotency_key_in_use ×52 (+0.1 s … +7.0 s)". */
function runs(answers: ChargeAnswer[], t0: number): string {
  const out: string[] = [];
  let i = 0;
  while (i < answers.length) {
    let j = i;
    while (j + 1 < answers.length && label(answers[j + 1]!) === label(answers[i]!)) j += 1;
    const first = answers[i]!;
    const last = answers[j]!;
    out.push(j === i ? `${label(first)} (${seconds(first.endedAt - t0)})` : `${label(first)} ×${j - i + 1} (${seconds(first.endedAt - t0)} … ${seconds(last.endedAt - t0)})`);
    i = j + 1;
  }
  return out.join(', then ') || 'no answer at all';
}

const chargeBody = (n: number) => ({ amount: 100 + (n % 900), currency: 'usd', source: 'tok_visa', description: 'failover test' });

describe('a database failover', () => {
  it(
    'primary killed, synchronous standby promoted, proxy switched: every charge gets its final answer within the bound, once',
    async () => {
      report.push('primary (immediate shutdown) -> synchronous standby, behind a TCP proxy; api, worker and simulator processes:');
      let services: ServiceProcess[] = [];
      const t0 = Date.now();
      try {
        // Two clusters of the test's own (embedded binaries, whatever DATABASE_URL says), a proxy in front.
        pair = await startPrimaryWithStandby();
        const { primary, standby } = pair;
        proxy = await startTcpProxy(primary.port);
        const direct = new URL(await primary.createDatabase());
        const viaProxy = new URL(direct);
        viaProxy.port = String(proxy.port);
        const databaseUrl = viaProxy.toString();
        note(`primary :${primary.port}, standby :${standby.port} (sync), proxy :${proxy.port}; set up in ${Date.now() - t0} ms`);

        db = createDb(createPool(databaseUrl, loadConfig({}), createLogger('silent')));
        const { account, auth } = await makeAccount(db);

        // The simulator, the api and the worker start together (the api needs the processor only to charge).
        const processorPort = await freePort();
        const processorUrl = `http://127.0.0.1:${processorPort}`;
        const port = await freePort();
        const baseUrl = `http://127.0.0.1:${port}`;
        // IDEMPOTENCY_LEASE_SECONDS and COMPLETER_INTERVAL_SECONDS are left at their defaults on purpose.
        const env: Record<string, string> = {
          DATABASE_URL: databaseUrl,
          PORT: String(port),
          PROCESSOR_URL: processorUrl,
          REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
          DB_CONNECTION_TIMEOUT_MS: String(DB_CONNECTION_TIMEOUT_MS),
          JOB_POLL_INTERVAL_SECONDS: '0.5',
          LOG_LEVEL: 'info',
        };
        const simulator = startService('simulator', {}, { command: ['node', 'src/simulator/main.ts', '--port', String(processorPort)] });
        const api = startService('api', env);
        const worker = startService('worker', env);
        services = [api, worker, simulator];
        const spawnedAt = Date.now();
        const readyIn: Record<string, number> = {};
        const timed = <T>(name: string, work: Promise<T>) => work.finally(() => (readyIn[name] = Date.now() - spawnedAt));
        const [simulatorUp, , workerUp] = await Promise.all([
          timed(
            'simulator',
            until(
              async () =>
                !simulator.alive() ||
                (await httpRequest('GET', `${processorUrl}/ledger`, { timeoutMs: 1000 }).then((r) => r.status === 200, () => false)),
              30_000,
              100,
            ),
          ),
          timed('api', waitForReady(baseUrl, api)),
          timed('worker', until(() => !worker.alive() || worker.lines.some((l) => /worker started/.test(String(l.msg))), 30_000, 100)),
        ]);
        expect(simulatorUp, 'the simulator answers GET /ledger').toBe(true);
        expect(workerUp, 'the worker started').toBe(true);
        expectAlive(services);
        const ledger = async () => {
          const res = await httpRequest('GET', `${processorUrl}/ledger`);
          expect(res.status, `GET ${processorUrl}/ledger`).toBe(200);
          return res.body.entries as LedgerEntry[];
        };
        const chaos = await httpRequest('PUT', `${processorUrl}/chaos`, { body: { mode: 'slow', latency_ms: PROCESSOR_LATENCY_MS, jitter_ms: 0 } });
        expect(chaos.status, 'PUT /chaos').toBe(200);
        note(`services ready ${Date.now() - t0} ms after the start (${Object.entries(readyIn).map(([name, ms]) => `${name} ${ms} ms`).join(', ')} from their spawn)`);

        // Clients: each keeps charging, one key per logical charge, retried with that key until final.
        const prefix = `failover-${randomBytes(3).toString('hex')}`;
        const answers: ChargeAnswer[] = [];
        const outcomes: ChargeOutcome[] = [];
        const abort = new AbortController();
        for (const s of services) void s.exited.then(() => abort.abort());
        let stopping = false;
        const inFlight = new Map<string, number>(); // key -> when its first attempt began
        const loop = async (client: number) => {
          for (let n = 0; !stopping && !abort.signal.aborted; n += 1) {
            const key = `${prefix}-c${client}-${n}`;
            inFlight.set(key, Date.now());
            const outcome = await chargeUntilFinal(baseUrl, auth, chargeBody(n), {
              key,
              maxTries: 100_000,
              pauseMs: CLIENT_PAUSE_MS,
              timeoutMs: CLIENT_TIMEOUT_MS,
              signal: abort.signal,
              onAnswer: (a) => answers.push(a),
            });
            inFlight.delete(key);
            outcomes.push(outcome);
            // Jittered, so the clients do not all pause together.
            if (!stopping) await sleep(25 + Math.random() * 50);
          }
        };
        const done = Promise.all(Array.from({ length: CLIENTS }, (_, i) => loop(i)));
        clients = { abort, done };

        const succeeded = () => outcomes.filter((o) => o.final?.status === 201).length;
        const warmedUp = await until(() => abort.signal.aborted || succeeded() >= SUCCEEDED_BEFORE_FAILOVER, 30_000);
        expectAlive(services);
        expect(warmedUp, `harness: ${succeeded()} charges succeeded in 30 s before the failover`).toBe(true);
        const sync = await pair.replication();
        expect(sync.map((r) => `${r.application_name} ${r.state} ${r.sync_state}`), 'harness: the standby is synchronous at the failover').toEqual([
          `${standby.applicationName} streaming sync`,
        ]);

        // The failover, at a moment when charges are in flight: the clients' charges take about as long each
        // (the processor's latency), so they can all be between two charges at once.
        await until(() => inFlight.size >= CLIENTS / 2, 5_000);
        // The primary dies, the standby is promoted, the proxy follows and cuts every session.
        const inFlightAtFailover = [...inFlight.keys()];
        const downAt = Date.now();
        await primary.stop('immediate');
        const stoppedAt = Date.now();
        await standby.promote();
        const promotedAt = Date.now();
        const cut = proxy.switchTo(standby.port);
        const switchedAt = Date.now();
        // The new primary takes writes once a transaction id can be assigned through the proxy.
        const probeErrors: string[] = [];
        const writable = await until(async () => {
          const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 1000, query_timeout: 1000 });
          client.on('error', () => undefined);
          const began = Date.now();
          try {
            await client.connect();
            await client.query('select txid_current()');
            return true;
          } catch (err) {
            const e = err as Error & { code?: string };
            probeErrors.push(`${relative(began - switchedAt, 'the switch')}: ${e.code ? `${e.code} ` : ''}${e.message} (${Date.now() - began} ms)`);
            return false;
          } finally {
            void client.end().catch(() => undefined); // not awaited: ending a client that never connected may wait
          }
        }, 30_000);
        expect(writable, `harness: no write through the proxy 30 s after the switch: ${probeErrors.slice(-3).join('; ')}\n${standby.logTail()}`).toBe(true);
        const writableAt = Date.now();
        note(
          `failover: primary stopped in ${stoppedAt - downAt} ms, standby promoted in ${promotedAt - stoppedAt} ms, proxy switched (${cut} sessions cut), ` +
            `writes through the proxy ${writableAt - switchedAt} ms later; ${inFlightAtFailover.length} charges were in flight`,
        );
        if (probeErrors.length) note(`write probes that failed after the switch (${probeErrors.length}): ${probeErrors.slice(0, 3).join('; ')}${probeErrors.length > 3 ? ` … ${probeErrors.at(-1)}` : ''}`);
        if (writableAt - switchedAt > 2000) note(`standby log:\n${standby.logTail(30).replace(/^/gm, '    ')}`);
        expect(inFlightAtFailover.length, 'harness: no charge was in flight when the primary died').toBeGreaterThan(0);
        expectAlive(services);

        // Every charge has until max(writableAt, its start) + FINAL_BOUND_MS. Wait for the charges begun
        // before the new primary took writes, and a round of new ones, or that bound; then stop the clients
        // (each charge still in flight keeps its own bound) and cut off whatever still has no answer.
        const deadlineOf = (startedAt: number) => Math.max(writableAt, startedAt) + FINAL_BOUND_MS;
        const succeededAfter = () => outcomes.filter((o) => o.answers[0]!.startedAt > writableAt && o.final?.status === 201).length;
        await until(
          () => abort.signal.aborted || ([...inFlight.values()].every((startedAt) => startedAt > writableAt) && succeededAfter() >= CLIENTS),
          FINAL_BOUND_MS + 1000,
        );
        stopping = true;
        // Until every charge still in flight has its final answer or is past its own bound (then waiting
        // longer shows nothing new: it already failed).
        await until(() => [...inFlight.values()].every((startedAt) => deadlineOf(startedAt) < Date.now()), FINAL_BOUND_MS + 1000);
        const unfinishedAtStop = [...inFlight.keys()];
        const finished = unfinishedAtStop.length === 0;
        abort.abort();
        expect(await within(done, CLIENT_TIMEOUT_MS + 5000), 'harness: the client loops did not stop after the abort').toBe(true);
        expectAlive(services);
        const stopAt = Date.now();
        note(`clients stopped ${relative(stopAt - writableAt, 'the new primary took writes')}${finished ? '' : `; ${unfinishedAtStop.length} charges still without a final answer were cut off`}`);

        // (1) Every charge got its final answer within the bound; for one that did not, what held its key.
        const leases = new Map((await lockedKeys(db, account.id)).map((k) => [k.key, k]));
        const late: string[] = [];
        for (const o of outcomes) {
          const startedAt = o.answers[0]?.startedAt ?? writableAt;
          const deadline = deadlineOf(startedAt);
          if (o.final && o.final.endedAt <= deadline) continue;
          const since = o.answers.filter((a) => a.endedAt >= writableAt);
          const began = startedAt < downAt ? `began ${relative(startedAt - downAt, 'the primary died')}` : `began ${relative(startedAt - writableAt, 'the new primary took writes')}`;
          const outcome = o.final
            ? `final ${label(o.final)} only ${relative(o.final.endedAt - writableAt, 'the new primary took writes')} (bound ${secs(deadline - writableAt)})`
            : `no final answer ${relative((o.answers.at(-1)?.endedAt ?? stopAt) - writableAt, 'the new primary took writes')} (bound ${secs(deadline - writableAt)})`;
          const lease = leases.get(o.key);
          const held = lease ? `; its key (${lease.recovery_point}) is still leased, locked ${lease.locked_seconds.toFixed(1)} s ago` : '';
          late.push(`key ${o.key} (${began}): ${outcome}; answers since the new primary took writes: ${runs(since, writableAt)}${held}`);
        }
        expect
          .soft(
            late,
            `every charge has its final answer within ${FINAL_BOUND_MS} ms of the new primary taking writes; ` +
              `IDEMPOTENCY_LEASE_SECONDS is the default ${loadConfig({ REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS) }).IDEMPOTENCY_LEASE_SECONDS} s`,
          )
          .toEqual([]);

        // (2) No 500 (nor any 5xx but 503, which says "retry").
        const internal = answers.filter((a) => a.status >= 500 && a.status !== 503);
        expect
          .soft(
            internal.map((a) => `${label(a)} to key ${a.key} attempt ${a.attempt} ${relative(a.endedAt - downAt, 'the primary died')}: ${JSON.stringify(a.body).slice(0, 300)}`),
            'answers that are internal errors',
          )
          .toEqual([]);
        const around = answers.filter((a) => a.endedAt >= downAt);
        note(`${outcomes.length} logical charges, ${answers.length} answers; finals ${countBy(outcomes, (o) => (o.final ? label(o.final) : `none (${o.gaveUp})`))}`);
        note(`answers from the primary's death on: ${countBy(around, label)}`);
        const atFailover = outcomes.filter((o) => inFlightAtFailover.includes(o.key));
        const answered = atFailover.filter((o) => o.final);
        note(
          `charges in flight at the failover: ${answered.length} of ${atFailover.length} got a final answer` +
            (answered.length ? `, the last ${relative(Math.max(...answered.map((o) => o.final!.endedAt)) - writableAt, 'the new primary took writes')}` : '') +
            ` (bound ${secs(FINAL_BOUND_MS)})`,
        );

        // (3) Pending charges settle; none is left pending without a job that would settle it.
        let pending: PendingCharge[] = [];
        await until(
          async () => {
            pending = await pendingCharges(db!, account.id);
            return pending.every((p) => p.jobs.length === 0);
          },
          SETTLE_BOUND_MS,
          250,
        );
        expect
          .soft(
            pending.map(
              (p) =>
                `charge ${p.id} (key ${p.client_key}, ${p.recovery_point}${p.locked_at ? `, leased since ${relative(p.locked_at.getTime() - writableAt, 'the new primary took writes')}` : ''}) pending, ` +
                (p.jobs.length ? `its job(s) ${p.jobs.join(', ')} did not settle it within ${SETTLE_BOUND_MS / 1000} s` : 'with no settle job'),
            ),
            'charges left pending',
          )
          .toEqual([]);

        // (4) Nothing lost, nothing doubled: our database, the answers and the processor's ledger agree.
        const rows = await chargeRows(db, account.id);
        const entries = await ledger();
        for (const f of exactlyOnceFindings(outcomes, rows, entries)) expect.soft(f.problems, f.check).toEqual([]);
        note(`charge rows ${rows.length} (${countBy(rows, (r) => r.status)}), processor ledger charges ${entries.filter((e) => e.type === 'charge').length}`);

        // (5) No key left leased.
        const locked = await lockedKeys(db, account.id);
        expect
          .soft(
            locked.map((k) => `key ${k.key} (${k.recovery_point}) locked ${k.locked_seconds.toFixed(1)} s ago, ${relative(k.locked_at.getTime() - downAt, 'the primary died')}`),
            'idempotency keys still leased at the end',
          )
          .toEqual([]);

        // (6) No process exited.
        expectAlive(services);
        note(`test took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } catch (err) {
        for (const s of services.filter((p) => p.exitedAt() !== undefined)) {
          note(`${s.role} process pid ${s.pid} exited (code ${s.exit()!.code}, signal ${s.exit()!.signal}): ${crashSummary(s.stderr) || '(no stderr)'}`);
        }
        note(`FAILED: ${String((err as Error).message ?? err).split('\n')[0]}`);
        throw err;
      } finally {
        clients?.abort.abort();
      }
    },
    TEST_TIMEOUT_MS,
  );
});
