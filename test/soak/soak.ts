// The chaos soak: the whole service (two api and two worker processes) against a Postgres cluster and a
// processor simulator it owns, under mixed client load through the SDK, while a seeded schedule breaks
// the processor, the database and the processes in turn. Afterwards everything is healed, the workers
// settle what is left, and the database, the processor's ledger and every answer a client received are
// checked against each other (see checks.ts). runSoak never throws for a breach: it returns them.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { createAccount } from '../../src/accounts/accounts.service.ts';
import {
  type AttemptInfo,
  type Charge,
  createClient,
  type CreateChargeParams,
  type CreateRefundParams,
  type List,
  type PaymentsClient,
  PaymentsError,
  type Refund,
} from '../../src/client/index.ts';
import { loadConfig } from '../../src/config.ts';
import { createDb, createPool, type Db } from '../../src/db/database.ts';
import { createLogger } from '../../src/logger.ts';
import type { LedgerEntry, VoidedKey } from '../../src/simulator/simulator.ts';
import { startTestCluster, type TestCluster } from '../helpers/cluster.ts';
import { freePort } from '../helpers/ports.ts';
import { type Receiver, startReceiver } from '../helpers/receiver.ts';
import { crashSummary, type ServiceProcess, sleep, startService, waitForReady } from '../helpers/processes.ts';
import {
  type CallRecord,
  type ChargeRowX,
  checkInvariants,
  type InvariantResult,
  isUnknown,
  type KeyRowX,
  type Observation,
  orphanCause,
  type OrphanJob,
  type ProcessLog,
  type Outcome,
  type RefundRowX,
} from './checks.ts';
import { type LoggedSimulator, startLoggedSimulator } from './processor.ts';
import { createRng, describeFault, type PlannedFault, planFaults, type Rng } from './schedule.ts';

export interface SoakOptions {
  durationSeconds: number;
  seed: number;
  /** Progress lines (setup, each fault injected and healed, phases), as they happen. */
  log?: (line: string) => void;
  /** Aborting ends the load at once and goes straight to teardown. */
  signal?: AbortSignal;
  /** Load loops; 6 by default. */
  loops?: number;
  /** Keep every log in a directory even when nothing breached (they are always kept on a breach). */
  keepLogs?: boolean;
  /** How long the workers get, once everything is healed, to finish what is pending; 90 s by default. */
  settleTimeoutSeconds?: number;
}

export interface SoakResult {
  /** One line per breach, prefixed by its invariant; empty when every invariant holds. */
  breaches: string[];
  /** The run's report: setup, timeline, totals, reconciliation, processes, timings, invariants. */
  report: string[];
  invariants: InvariantResult[];
}

type Client = PaymentsClient;
type Payment = Charge | Refund;
type Role = 'api' | 'worker';

const REQUEST_TIMEOUT_MS = 2000;
/** The client's per-attempt timeout: the api answers within its REQUEST_TIMEOUT_MS, so this is only reached when a copy does not answer at all. */
const CLIENT_TIMEOUT_MS = 4000;
const CLIENT_DEADLINE_MS = 20_000;
const RECOVERY_DEADLINE_MS = 60_000;
const WAIT_FOR_TIMEOUT_MS = 10_000;
const LEASE_SECONDS = 5;
/** The soak's own database connections carry this name, so terminating "the service's" spares them. */
const SOAK_APPLICATION = 'chaos-soak';
const SIGTERM_GRACE_MS = 20_000;
/** A job handler runs within REQUEST_TIMEOUT_MS; one `active` this long after it started has none left. */
const ORPHAN_AFTER_SECONDS = 15;
/** Once only payments flagged for reconciliation are pending, how long they may stay so before we stop waiting. */
const FLAGGED_PATIENCE_MS = 20_000;
// How long the soak waits, after every payment is final, for the last webhook deliveries to be taken.
const DELIVERY_PATIENCE_MS = 60_000;

interface Slot {
  name: string;
  role: Role;
  index: number;
  port: number;
  baseUrl: string;
  proc: ServiceProcess;
  history: ServiceProcess[];
  restarts: number;
}

interface Rss {
  name: string;
  pid: number;
  startKb?: number;
  endKb?: number;
  maxKb: number;
}


const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function countBy<T>(items: Iterable<T>, key: (item: T) => string): string {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return (
    [...counts]
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k} ×${n}`)
      .join(', ') || 'none'
  );
}

async function vmRssKb(pid: number): Promise<number | undefined> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const kb = status?.match(/^VmRSS:\s+(\d+)\s+kB/m)?.[1];
  return kb === undefined ? undefined : Number(kb);
}

/** `work`, or undefined after `ms`; the timer never outlives the race. */
async function within<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const { durationSeconds, seed } = options;
  const loops = options.loops ?? 6;
  const settleTimeoutMs = (options.settleTimeoutSeconds ?? 90) * 1000;
  const began = Date.now();
  let loadStart = began;
  const rel = () => `+${((Date.now() - loadStart) / 1000).toFixed(1)}s`;
  const rel2 = (t: number) => `+${((t - loadStart) / 1000).toFixed(2)}s`;
  const log = (line: string) => options.log?.(`[soak ${rel()}] ${line}`);
  const report: string[] = [];
  const timeline: string[] = [];
  const harness: string[] = [];
  const note = (line: string) => {
    timeline.push(`${rel().padStart(7)}  ${line}`);
    log(line);
  };
  const timings: Record<string, number> = {};
  const mark = (phase: string, since: number) => (timings[phase] = Date.now() - since);

  const plan = planFaults(seed, durationSeconds);

  // Everything the run owns, released in the finally block whatever happened.
  let cluster: TestCluster | undefined;
  let db: Db | undefined;
  let simulator: LoggedSimulator | undefined;
  let receiver: Receiver | undefined;
  const slots: Slot[] = [];
  const expectedExits = new Set<ServiceProcess>();
  /** Every process the soak killed or stopped, when, and how. */
  const kills: { at: number; name: string; pid: number; signal: 'SIGKILL' | 'SIGTERM' }[] = [];
  /** When the database was stopped, paused or had its connections cut. */
  const dbFaults: { kind: string; from: number; to: number }[] = [];
  /** Processes under SIGSTOP right now: always continued before anything else is done with them. */
  const frozen = new Set<ServiceProcess>();
  const unexpectedExits: string[] = [];
  const sigtermProblems: string[] = [];
  const rss = new Map<number, Rss>();
  let tearingDown = false;
  let rssTimer: NodeJS.Timeout | undefined;
  let invariants: InvariantResult[] = [];
  const abort = options.signal;

  try {
    // ---------------------------------------------------------------- setup
    const setupStart = Date.now();
    cluster = await startTestCluster();
    const databaseUrl = await cluster.createDatabase();
    const soakUrl = new URL(databaseUrl);
    soakUrl.searchParams.set('application_name', SOAK_APPLICATION);
    const database = createDb(createPool(soakUrl.toString(), loadConfig({}), createLogger('silent')));
    db = database;
    const { account, apiKey } = await createAccount(database, `chaos soak ${seed}`);
    simulator = await startLoggedSimulator();
    const sim = simulator;
    const env: Record<string, string> = {
      DATABASE_URL: databaseUrl,
      PROCESSOR_URL: sim.url,
      LOG_LEVEL: 'info',
      REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
      IDEMPOTENCY_LEASE_SECONDS: String(LEASE_SECONDS),
      COMPLETER_INTERVAL_SECONDS: '1',
      JOB_POLL_INTERVAL_SECONDS: '0.5',
      SETTLE_RETRY_DELAY_SECONDS: '1',
      SETTLE_RETRY_DELAY_MAX_SECONDS: '2',
      SWEEP_INTERVAL_SECONDS: '2',
      RECONCILE_INTERVAL_SECONDS: '2',
      SETTLE_WINDOW_SECONDS: String(plan.settleWindowSeconds),
      DB_CONNECTION_TIMEOUT_MS: '1000',
      SHUTDOWN_GRACE_MS: '5000',
      // The soak's webhook receiver listens on this machine; retries at soak speed.
      WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
      WEBHOOK_TIMEOUT_MS: '2000',
      WEBHOOK_RETRY_DELAY_MS: '200',
      WEBHOOK_RETRY_DELAY_MAX_MS: '2000',
    };
    // A receiver for every event, that refuses every fifth request: deliveries are retried under the faults.
    receiver = await startReceiver({ failEvery: 5 });
    const hooks = receiver;

    const watch = (slot: Slot, proc: ServiceProcess) => {
      void proc.exited.then((exit) => {
        if (expectedExits.has(proc) || tearingDown) return;
        const line = `${slot.name} pid ${proc.pid} exited unexpectedly at ${rel()} (code ${exit.code}, signal ${exit.signal}): ${crashSummary(proc.stderr) || '(no stderr)'}`;
        unexpectedExits.push(`${line}\n${proc.describe()}`);
        note(`UNEXPECTED EXIT: ${line}`);
      });
    };
    const spawn = (slot: { name: string; role: Role; port: number }): ServiceProcess => {
      const proc = startService(slot.role, { ...env, PORT: String(slot.port) });
      rss.set(proc.pid, { name: slot.name, pid: proc.pid, maxKb: 0 });
      return proc;
    };
    const ready = async (slot: Slot, timeoutMs = 60_000) => {
      if (slot.role === 'api') return waitForReady(slot.baseUrl, slot.proc, timeoutMs);
      const until = Date.now() + timeoutMs;
      while (!slot.proc.lines.some((l) => /^worker started/.test(String(l.msg)))) {
        if (!slot.proc.alive()) throw new Error(`the worker exited before it started\n${slot.proc.describe()}`);
        if (Date.now() > until) throw new Error(`worker not started after ${timeoutMs} ms\n${slot.proc.describe()}`);
        await sleep(100);
      }
    };
    for (const role of ['api', 'worker'] as const) {
      for (const index of [0, 1]) {
        const port = await freePort();
        const base = { name: `${role}#${index}`, role, index, port, baseUrl: `http://127.0.0.1:${port}` };
        const proc = spawn(base);
        const slot: Slot = { ...base, proc, history: [proc], restarts: 0 };
        slots.push(slot);
        watch(slot, proc);
      }
    }
    await Promise.all(slots.map((s) => ready(s)));
    const endpoint = await createClient({ baseUrl: slots[0]!.baseUrl, apiKey }).webhookEndpoints.create({ url: hooks.url, enabled_events: ['*'] });
    hooks.setSecret(endpoint.secret);
    for (const s of slots) {
      const r = rss.get(s.proc.pid)!;
      r.startKb = await vmRssKb(s.proc.pid);
      r.maxKb = r.startKb ?? 0;
    }
    rssTimer = setInterval(() => {
      for (const s of slots) {
        void vmRssKb(s.proc.pid).then((kb) => {
          const r = rss.get(s.proc.pid);
          if (r && kb !== undefined) r.maxKb = Math.max(r.maxKb, kb);
        });
      }
    }, 2000);
    const slot = (role: Role, index: number) => slots.find((s) => s.role === role && s.index === index)!;

    /** Restarts a slot's process on the same port and waits until it is ready (a few tries). */
    const restart = async (s: Slot, why: string) => {
      for (let attempt = 1; attempt <= 3; attempt += 1) {
        const t = Date.now();
        const proc = spawn(s);
        s.proc = proc;
        s.history.push(proc);
        s.restarts += 1;
        watch(s, proc);
        try {
          await ready(s);
          const r = rss.get(proc.pid);
          if (r) r.maxKb = r.startKb = (await vmRssKb(proc.pid)) ?? 0;
          note(`  ${s.name} restarted (pid ${proc.pid}, ready in ${Date.now() - t} ms) after ${why}`);
          return;
        } catch (err) {
          note(`  ${s.name} restart ${attempt} failed: ${String((err as Error).message).split('\n')[0]}`);
          if (proc.alive()) {
            expectedExits.add(proc);
            proc.child.kill('SIGKILL');
            await proc.exited;
          }
        }
      }
      harness.push(`${s.name} could not be restarted after ${why}`);
    };

    report.push(
      `chaos soak: seed ${seed}, ${durationSeconds} s of load, ${loops} load loops; 2 api + 2 worker processes`,
      `  postgres cluster 127.0.0.1:${cluster.port} (own), processor simulator ${sim.url} (in-process)`,
      `  env: REQUEST_TIMEOUT_MS ${REQUEST_TIMEOUT_MS}, IDEMPOTENCY_LEASE_SECONDS ${LEASE_SECONDS}, SETTLE_WINDOW_SECONDS ${plan.settleWindowSeconds}, settle retry 1..2 s, sweep/reconcile every 2 s, completer 1 s`,
      `  processes: ${slots.map((s) => `${s.name} pid ${s.proc.pid}${s.role === 'api' ? ` :${s.port}` : ''}`).join(', ')}`,
    );
    mark('setup', setupStart);
    log(`setup done in ${secs(timings.setup!)}: ${report[3]!.trim()}`);

    // ---------------------------------------------------------------- load
    const calls: CallRecord[] = [];
    const observations: Observation[] = [];
    const attempts: (AttemptInfo & { api: number })[] = [];
    const attemptsByKey = new Map<string, (AttemptInfo & { api: number })[]>();
    const clientOptions = { timeoutMs: CLIENT_TIMEOUT_MS, maxAttempts: 6, deadlineMs: CLIENT_DEADLINE_MS, retryBaseMs: 150 };
    const makeClient = (api: number, extra: Partial<typeof clientOptions> = {}): Client =>
      createClient({
        baseUrl: slots[api]!.baseUrl,
        apiKey,
        ...clientOptions,
        ...extra,
        onAttempt: (a: AttemptInfo) => {
          const rec = { ...a, api };
          attempts.push(rec);
          if (a.idempotencyKey) {
            const list = attemptsByKey.get(a.idempotencyKey) ?? [];
            list.push(rec);
            attemptsByKey.set(a.idempotencyKey, list);
          }
        },
      });
    const clients = [makeClient(0), makeClient(1)];
    let nextApi = 0;
    const pickApi = () => (nextApi = 1 - nextApi);

    // What the load knows, to choose refunds, reads and replays.
    const succeededCharges = new Map<string, { id: string; amount: number }>();
    const pendingPayments = new Map<string, { kind: 'charge' | 'refund'; payment: Payment }>();
    const knownCharges: string[] = [];
    const knownRefunds: string[] = [];
    const paymentCalls: CallRecord[] = [];

    const outcomeOf = (err: unknown): Outcome => {
      if (err instanceof PaymentsError) {
        const payment = err.payment;
        if (err.status === 402 && payment?.id) {
          return { kind: 'payment', id: payment.id, status: payment.status, http: 402, code: err.code };
        }
        return { kind: 'error', http: err.status, code: err.code, requestId: err.requestId, message: err.message, attempts: err.attempts };
      }
      return { kind: 'exception', message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) };
    };
    const learn = (kind: 'charge' | 'refund', p: Payment, via: string) => {
      observations.push({ kind, id: p.id, status: p.status, at: Date.now(), via });
      if (kind === 'charge') {
        if (!knownCharges.includes(p.id)) knownCharges.push(p.id);
        if (p.status === 'succeeded') succeededCharges.set(p.id, { id: p.id, amount: p.amount });
      } else if (!knownRefunds.includes(p.id)) knownRefunds.push(p.id);
      if (p.status === 'pending') pendingPayments.set(p.id, { kind, payment: p });
      else pendingPayments.delete(p.id);
    };

    /** One logical create (charge or refund): recorded with what the client was finally told. */
    const create = async (
      op: CallRecord['op'],
      kind: 'charge' | 'refund',
      api: number,
      key: string,
      body: Record<string, unknown>,
      client: Client = clients[api]!,
      replayOf?: number,
      limitMs = CLIENT_DEADLINE_MS,
    ): Promise<CallRecord> => {
      const call: CallRecord = {
        seq: calls.length,
        op,
        kind,
        api,
        key,
        body,
        startedAt: Date.now(),
        endedAt: 0,
        limitMs,
        outcome: { kind: 'exception', message: 'unfinished' },
        ...(replayOf !== undefined ? { replayOf } : {}),
      };
      calls.push(call);
      paymentCalls.push(call);
      try {
        const p: Payment =
          kind === 'charge'
            ? await client.charges.create(body as unknown as CreateChargeParams, { idempotencyKey: key })
            : await client.refunds.create(body as unknown as CreateRefundParams, { idempotencyKey: key });
        call.outcome = { kind: 'payment', id: p.id, status: p.status, http: p.status === 'pending' ? 202 : 201 };
        learn(kind, p, `${op} answer`);
      } catch (err) {
        call.outcome = outcomeOf(err);
        const payment = err instanceof PaymentsError ? err.payment : undefined;
        if (call.outcome.kind === 'payment' && payment) learn(kind, payment, `${op} answer`);
      }
      call.endedAt = Date.now();
      return call;
    };

    /** A read: any failure is recorded as an answer (reads are retried by the SDK too). */
    const read = async (op: CallRecord['op'], api: number, work: () => Promise<void>, limitMs?: number) => {
      const call: CallRecord = { seq: calls.length, op, kind: 'read', api, startedAt: Date.now(), endedAt: 0, outcome: { kind: 'read' }, ...(limitMs ? { limitMs } : {}) };
      calls.push(call);
      try {
        await work();
      } catch (err) {
        call.outcome = outcomeOf(err);
      }
      call.endedAt = Date.now();
    };

    const SOURCES = [
      ...Array<string>(16).fill('tok_visa'),
      'tok_mastercard',
      'tok_mastercard',
      'tok_chargeDeclined',
      'tok_chargeDeclined',
      'tok_insufficientFunds',
      'tok_expiredCard',
    ];

    let stopping = false;
    const stopLoad = () => {
      stopping = true;
    };
    abort?.addEventListener('abort', stopLoad, { once: true });

    const loop = async (n: number, rng: Rng) => {
      for (let i = 0; !stopping; i += 1) {
        const r = rng.next();
        const api = pickApi();
        const other = 1 - api;
        if (r < 0.45 || (r < 0.63 && succeededCharges.size === 0)) {
          const key = `soak-${seed}-l${n}-c${i}`;
          const body = {
            amount: rng.int(100, 20_000),
            currency: 'usd',
            source: rng.pick(SOURCES),
            description: `soak loop ${n} #${i}`,
            ...(rng.chance(0.3) ? { metadata: { loop: String(n), n: String(i) } } : {}),
          };
          if (rng.chance(0.06)) {
            // The same key at both copies at once: one runs it, the other waits (409) and gets the replay.
            const [a, b] = await Promise.all([create('charge', 'charge', api, key, body), create('charge_dup', 'charge', other, key, body)]);
            b.replayOf = a.seq;
          } else {
            const first = await create('charge', 'charge', api, key, body);
            if (rng.chance(0.25)) await create('charge_replay', 'charge', other, key, body, clients[other], first.seq);
          }
        } else if (r < 0.63) {
          const charge = rng.pick([...succeededCharges.values()]);
          const key = `soak-${seed}-l${n}-r${i}`;
          const full = rng.chance(0.35);
          const body: Record<string, unknown> = { charge: charge.id };
          if (!full) body.amount = rng.int(1, Math.max(1, Math.floor(charge.amount / 3)));
          if (rng.chance(0.3)) body.reason = rng.pick(['duplicate', 'fraudulent', 'requested_by_customer']);
          const first = await create('refund', 'refund', api, key, body);
          if (rng.chance(0.2)) await create('refund_replay', 'refund', other, key, body, clients[other], first.seq);
        } else if (r < 0.7 && paymentCalls.length) {
          // A replay of an older request, at the other copy: the stored answer, the same payment.
          const old = rng.pick(paymentCalls.filter((c) => c.op === 'charge' || c.op === 'refund'));
          if (old) {
            const kind = old.kind === 'charge' ? 'charge' : 'refund';
            await create(`${kind}_replay`, kind, 1 - old.api, old.key!, old.body!, clients[1 - old.api], old.seq);
          }
        } else if (r < 0.85 && knownCharges.length) {
          const client = clients[api]!;
          if (knownRefunds.length && rng.chance(0.3)) {
            const id = rng.pick(knownRefunds);
            await read('retrieve_refund', api, async () => learn('refund', await client.refunds.retrieve(id), 'retrieve'), CLIENT_DEADLINE_MS);
          } else {
            const id = rng.pick(knownCharges);
            await read('retrieve', api, async () => learn('charge', await client.charges.retrieve(id), 'retrieve'), CLIENT_DEADLINE_MS);
          }
        } else if (r < 0.93) {
          const client = clients[api]!;
          if (rng.chance(0.15)) {
            await read('list_all', api, async () => {
              let seen = 0;
              for await (const c of client.charges.listAll({ limit: 10 })) {
                learn('charge', c, 'listAll');
                if ((seen += 1) >= 25) break;
              }
            });
          } else {
            await read('list', api, async () => {
              const after = knownCharges.length && rng.chance(0.4) ? rng.pick(knownCharges) : undefined;
              const page: List<Charge> = await client.charges.list({ limit: rng.int(5, 30), ...(after ? { starting_after: after } : {}) });
              for (const c of page.data) learn('charge', c, 'list');
            }, CLIENT_DEADLINE_MS);
          }
        } else if (pendingPayments.size) {
          const { kind, payment } = rng.pick([...pendingPayments.values()]);
          const client = clients[api]!;
          await read('wait_for', api, async () => {
            learn(kind, await client.waitFor(payment, { timeoutMs: WAIT_FOR_TIMEOUT_MS, intervalMs: 250 }), 'waitFor');
          }, WAIT_FOR_TIMEOUT_MS);
        }
        await sleep(rng.int(5, 60));
      }
    };

    // ---------------------------------------------------------------- faults
    const faultCounts = new Map<string, number>();
    const skipped: string[] = [];
    const chaos = async (body: Record<string, unknown>) => {
      const res = await fetch(`${sim.url}/chaos`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      if (res.status !== 200) throw new Error(`PUT /chaos ${JSON.stringify(body)}: ${res.status} ${await res.text()}`);
    };
    let loadEndsAt = 0;
    const waitUntil = async (at: number) => {
      while (Date.now() < at && !stopping) await sleep(Math.min(200, at - Date.now()));
    };
    const clusterMayStop = () => cluster!.state() === 'running';

    const injectInfra = async (f: Extract<PlannedFault, { track: 'infra' }>) => {
      const c = cluster!;
      const t = Date.now();
      if (f.kind.startsWith('pg_')) {
        // Closed when the fault heals (the finally below), so the window covers the whole outage.
        const window = { kind: f.kind, from: t, to: Number.POSITIVE_INFINITY };
        dbFaults.push(window);
        try {
          await injectDatabase(f, c, t);
        } finally {
          window.to = Date.now();
        }
        return;
      }
      await injectProcess(f, t);
    };

    const injectDatabase = async (f: Extract<PlannedFault, { track: 'infra' }>, c: TestCluster, t: number) => {
      switch (f.kind) {
        case 'pg_stop_fast':
        case 'pg_stop_immediate': {
          const mode = f.kind === 'pg_stop_fast' ? 'fast' : 'immediate';
          if (!clusterMayStop()) return;
          await c.stop(mode);
          note(`inject postgres stop (${mode}) in ${Date.now() - t} ms, held ${f.holdMs} ms`);
          await sleep(f.holdMs);
          const s = Date.now();
          await c.start();
          note(`  heal postgres started again in ${Date.now() - s} ms (down ${Date.now() - t} ms)`);
          return;
        }
        case 'pg_pause': {
          if (!clusterMayStop()) return;
          await c.pause();
          note(`inject postgres paused (SIGSTOP), held ${f.holdMs} ms`);
          await sleep(f.holdMs);
          await c.resume();
          note(`  heal postgres resumed (SIGCONT) after ${Date.now() - t} ms`);
          return;
        }
        case 'pg_terminate_backends': {
          const ended: number[] = [await c.terminateBackends(databaseUrl, { sparing: SOAK_APPLICATION })];
          note(`inject pg_terminate_backend of every service connection (ended ${ended[0]}), again every 600 ms for ${f.holdMs} ms`);
          while (Date.now() - t < f.holdMs) {
            await sleep(600);
            ended.push(await c.terminateBackends(databaseUrl, { sparing: SOAK_APPLICATION }));
          }
          note(`  pg_terminate_backend done: ${ended.length}× over ${Date.now() - t} ms (ended ${ended.join('+')})`);
          return;
        }
      }
    };

    const injectProcess = async (f: Extract<PlannedFault, { track: 'infra' }>, t: number) => {
      switch (f.kind) {
        case 'kill_api':
        case 'kill_worker': {
          const s = slot(f.target!.role, f.target!.index);
          const proc = s.proc;
          expectedExits.add(proc);
          kills.push({ at: Date.now(), name: s.name, pid: proc.pid, signal: 'SIGKILL' });
          proc.child.kill('SIGKILL');
          await proc.exited;
          note(`inject SIGKILL ${s.name} pid ${proc.pid}`);
          await restart(s, 'SIGKILL');
          return;
        }
        case 'freeze_api':
        case 'freeze_worker': {
          const s = slot(f.target!.role, f.target!.index);
          const proc = s.proc;
          frozen.add(proc);
          proc.child.kill('SIGSTOP');
          note(`inject SIGSTOP ${s.name} pid ${proc.pid} (frozen: its sockets stay open, nothing answers), held ${f.holdMs} ms`);
          await sleep(f.holdMs);
          proc.child.kill('SIGCONT');
          frozen.delete(proc);
          note(`  heal SIGCONT ${s.name} after ${Date.now() - t} ms`);
          return;
        }
        case 'sigterm': {
          const s = slot(f.target!.role, f.target!.index);
          const proc = s.proc;
          expectedExits.add(proc);
          kills.push({ at: Date.now(), name: s.name, pid: proc.pid, signal: 'SIGTERM' });
          proc.child.kill('SIGTERM');
          note(`inject SIGTERM ${s.name} pid ${proc.pid}`);
          const exit = await within(proc.exited, SIGTERM_GRACE_MS);
          if (!exit) {
            proc.child.kill('SIGKILL');
            await proc.exited;
            sigtermProblems.push(`${s.name} pid ${proc.pid} still running ${SIGTERM_GRACE_MS} ms after SIGTERM; killed\n${proc.describe()}`);
            note(`  ${s.name} did not exit within ${SIGTERM_GRACE_MS} ms of SIGTERM: SIGKILL`);
          } else {
            note(`  ${s.name} exited ${Date.now() - t} ms after SIGTERM (code ${exit.code}, signal ${exit.signal})`);
            if (exit.code !== 0) sigtermProblems.push(`${s.name} pid ${proc.pid} exited with code ${exit.code} signal ${exit.signal} after SIGTERM\n${proc.describe()}`);
          }
          await restart(s, 'SIGTERM');
          return;
        }
      }
    };

    const runTrack = async (faults: PlannedFault[]) => {
      for (const f of faults) {
        await waitUntil(loadStart + f.atMs);
        const costMs = f.track === 'processor' || f.kind.startsWith('pg_') || f.kind.startsWith('freeze') ? f.holdMs : 3000;
        if (stopping || Date.now() + costMs > loadEndsAt) {
          skipped.push(describeFault(f));
          continue;
        }
        faultCounts.set(f.track === 'processor' ? `processor ${f.kind}` : f.kind, (faultCounts.get(f.track === 'processor' ? `processor ${f.kind}` : f.kind) ?? 0) + 1);
        try {
          if (f.track === 'processor') {
            await chaos({ ...f.chaos });
            note(`inject ${describeFault(f)}, held ${f.holdMs} ms`);
            await sleep(f.holdMs);
            await chaos({ mode: 'healthy' });
            note(`  heal processor healthy (after ${f.kind})`);
          } else {
            await injectInfra(f);
          }
        } catch (err) {
          harness.push(`fault ${describeFault(f)} failed: ${String((err as Error).message ?? err)}`);
          note(`fault ${describeFault(f)} failed: ${String((err as Error).message ?? err).split('\n')[0]}`);
        }
      }
    };

    // Sample how many payments wait for reconciliation, through the run (the soak's own connection).
    let maxFlagged = 0;
    const sampleFlagged = setInterval(() => {
      void sql<{ n: number }>`select ((select count(*) from charges where reconcile_since is not null) + (select count(*) from refunds where reconcile_since is not null))::int as n`
        .execute(database)
        .then((r) => (maxFlagged = Math.max(maxFlagged, r.rows[0]?.n ?? 0)), () => undefined);
    }, 1000);

    loadStart = Date.now();
    loadEndsAt = loadStart + durationSeconds * 1000;
    note(`load starts: ${loops} loops; ${plan.processor.length} processor faults and ${plan.infra.length} infrastructure faults planned`);
    const loadDone = Promise.all(Array.from({ length: loops }, (_, n) => loop(n, createRng(seed).fork(n + 1))));
    const tracks = Promise.all([runTrack(plan.processor), runTrack(plan.infra)]);
    await waitUntil(loadEndsAt);
    stopLoad();
    note('load stops: waiting for calls in flight');
    const loadStopAt = Date.now();
    if (!(await within(loadDone.then(() => true), 60_000))) harness.push('load loops still busy 60 s after the stop');
    mark('load', loadStart);
    timings['load drain'] = Date.now() - loadStopAt;

    // ---------------------------------------------------------------- heal
    const healStart = Date.now();
    if (!(await within(tracks.then(() => true), 90_000))) harness.push('a fault track did not finish within 90 s of the stop');
    clearInterval(sampleFlagged);
    for (const proc of frozen) proc.child.kill('SIGCONT');
    frozen.clear();
    await chaos({ mode: 'healthy' }).catch((err) => harness.push(`could not heal the processor: ${String(err)}`));
    if (cluster.state() === 'paused') await cluster.resume();
    if (cluster.state() === 'stopped') await cluster.start();
    for (const s of slots) {
      if (!s.proc.alive()) await restart(s, 'finding it dead at the heal');
      else await ready(s, 30_000).catch((err) => harness.push(`${s.name} not ready at the heal: ${String(err).split('\n')[0]}`));
    }
    note(`healed: processor healthy, cluster ${cluster.state()}, ${slots.filter((s) => s.proc.alive()).length}/4 processes alive`);

    // Calls that ended without knowing (no answer, 5xx, in use): the retry rule says same key, again.
    // A key some other call of it already settled (a replay got the answer) needs no retry.
    const settledKeys = new Set(paymentCalls.filter((c) => !isUnknown(c.outcome)).map((c) => c.key!));
    const byKey = new Map(paymentCalls.filter((c) => isUnknown(c.outcome) && !settledKeys.has(c.key!)).map((c) => [c.key!, c]));
    const recoveryOptions = { maxAttempts: 20, deadlineMs: RECOVERY_DEADLINE_MS };
    const recoveryClients = [makeClient(0, recoveryOptions), makeClient(1, recoveryOptions)];
    const recovered = await Promise.all(
      [...byKey.values()].map((c) =>
        create('recovery', c.kind === 'refund' ? 'refund' : 'charge', c.api, c.key!, c.body!, recoveryClients[c.api], c.seq, RECOVERY_DEADLINE_MS),
      ),
    );
    note(`recovery: ${recovered.length} logical calls that ended unknown retried with their key: ${countBy(recovered, (c) => label(c.outcome))}`);
    mark('heal + recovery retries', healStart);

    // ---------------------------------------------------------------- settle
    const settleStart = Date.now();
    const pending = async () => {
      const { rows } = await sql<{ c: number; cf: number; r: number; rf: number }>`
        select (select count(*) from charges where status = 'pending')::int as c,
               (select count(*) from charges where status = 'pending' and reconcile_since is not null)::int as cf,
               (select count(*) from refunds where status = 'pending')::int as r,
               (select count(*) from refunds where status = 'pending' and reconcile_since is not null)::int as rf`.execute(database);
      return rows[0]!;
    };
    const atStart = await pending();
    let last = atStart;
    let onlyFlaggedSince: number | undefined;
    for (;;) {
      last = await pending();
      const total = last.c + last.r;
      if (total === 0) break;
      if (total === last.cf + last.rf) onlyFlaggedSince ??= Date.now();
      else onlyFlaggedSince = undefined;
      // A longer settle wait than the default is asked for to see everything end: flagged ones included.
      const patience = options.settleTimeoutSeconds === undefined ? FLAGGED_PATIENCE_MS : settleTimeoutMs;
      if (onlyFlaggedSince !== undefined && Date.now() - onlyFlaggedSince > patience) break;
      if (Date.now() - settleStart > settleTimeoutMs) break;
      await sleep(500);
    }
    mark('settle', settleStart);
    note(
      `settle: pending at the heal ${atStart.c} charges (${atStart.cf} flagged) + ${atStart.r} refunds (${atStart.rf} flagged); after ${secs(timings.settle!)}: ${last.c} charges (${last.cf} flagged) + ${last.r} refunds (${last.rf} flagged)`,
    );

    // Webhook deliveries of the last changes: retried until the receiver took them.
    const deliveriesStart = Date.now();
    const pendingDeliveries = async () =>
      (await sql<{ n: number }>`select count(*)::int as n from webhook_deliveries where status = 'pending'`.execute(database)).rows[0]!.n;
    while ((await pendingDeliveries()) > 0 && Date.now() - deliveriesStart < DELIVERY_PATIENCE_MS) await sleep(500);
    mark('webhook deliveries', deliveriesStart);
    note(`webhooks: ${await pendingDeliveries()} deliveries pending after ${secs(timings['webhook deliveries']!)}`);

    // ---------------------------------------------------------------- checks
    const checkStart = Date.now();
    for (const s of slots) {
      const r = rss.get(s.proc.pid);
      if (r) r.endKb = await vmRssKb(s.proc.pid);
    }
    const allAlive = slots.every((s) => s.proc.alive());
    const ledgerRes = await fetch(`${sim.url}/ledger`);
    const ledger = (await ledgerRes.json()) as { entries: LedgerEntry[]; requests: Record<string, number>; voided: VoidedKey[] };
    const charges = (
      await sql<ChargeRowX>`
        select c.id, c.status, c.amount, c.amount_refunded, c.failure_code, c.processor_idempotency_key,
               c.processor_reference, c.reconcile_since, k.key as client_key
        from charges c left join idempotency_keys k on k.id = c.idempotency_key_id
        where c.account_id = ${account.id}`.execute(database)
    ).rows;
    const refunds = (
      await sql<RefundRowX>`
        select r.id, r.charge_id, r.status, r.amount, r.failure_code, r.processor_idempotency_key,
               r.processor_reference, r.reconcile_since, k.key as client_key
        from refunds r left join idempotency_keys k on k.id = r.idempotency_key_id
        where r.account_id = ${account.id}`.execute(database)
    ).rows;
    const keys = (
      await sql<KeyRowX>`
        select id, key, request_path, recovery_point, response_status, locked_at, created_at, last_run_at,
               (locked_at is not null and locked_at < now() - make_interval(secs => ${LEASE_SECONDS})) as lease_expired,
               (created_at < now() - make_interval(secs => ${LEASE_SECONDS})) as older_than_lease
        from idempotency_keys where account_id = ${account.id}`.execute(database)
    ).rows;
    // A handler runs within REQUEST_TIMEOUT_MS; a job still active long after that has no handler left.
    const orphanRows = (
      await sql<{ id: string; name: string; singleton_key: string | null; started_on: Date; expires_on: Date }>`
        select id, name, singleton_key, started_on, started_on + expire_seconds * interval '1 second' as expires_on
        from pgboss.job where state = 'active' and started_on < now() - make_interval(secs => ${ORPHAN_AFTER_SECONDS})`.execute(database)
    ).rows;
    /** Why nothing runs an orphaned job: the worker that ran it, and what happened right after. */
    const processLogs: ProcessLog[] = slots.flatMap((sl) =>
      sl.history.map((p) => ({ name: sl.name, pid: p.pid, lines: p.lines, ...(p.exit() ? { exit: p.exit()! } : {}) })),
    );
    const causes = new Map(
      orphanRows.map((o) => [
        o.id,
        orphanCause(
          { id: o.id, queue: o.name, startedOn: o.started_on },
          { processes: processLogs, kills, dbFaults, handlerBoundMs: REQUEST_TIMEOUT_MS, at: rel2 },
        ),
      ]),
    );
    const orphans = new Map<string, OrphanJob>(
      orphanRows.map((o) => [
        o.singleton_key ?? o.id,
        { id: o.id, queue: o.name, startedOn: o.started_on, expiresOn: o.expires_on, cause: causes.get(o.id)!.text },
      ]),
    );
    const jobs = (
      await sql<{ name: string; state: string; n: number }>`select name, state, count(*)::int as n from pgboss.job group by 1, 2 order by 1, 2`.execute(database)
    ).rows;

    invariants = checkInvariants({
      calls,
      observations,
      charges,
      refunds,
      keys,
      ledger: ledger.entries,
      voided: ledger.voided,
      processes: {
        unexpectedExits,
        sigtermProblems,
        deadAtEnd: allAlive ? [] : slots.filter((s) => !s.proc.alive()).map((s) => s.name),
      },
      attemptsByKey,
      attempts,
      attemptTimeoutMs: CLIENT_TIMEOUT_MS,
      orphans,
      webhooks: {
        events: (
          await sql<{ id: string; type: string; object_id: string }>`
            select id, type, data->>'id' as object_id from events where account_id = ${account.id}`.execute(database)
        ).rows,
        deliveries: Object.fromEntries(
          (await sql<{ status: string; n: number }>`select status, count(*)::int as n from webhook_deliveries group by 1`.execute(database)).rows.map(
            (r) => [r.status, r.n],
          ),
        ),
        accepted: new Set(hooks.accepted.keys()),
        received: hooks.received.length,
        refusedOnPurpose: hooks.received.filter((d) => d.status === 500).length,
        duplicates: hooks.duplicates,
        unverified: hooks.unverified,
      },
    });
    const mb = (kb: number | undefined) => (kb === undefined ? '-' : `${(kb / 1024).toFixed(0)} MB`);
    invariants.push({
      id: 9,
      name: 'RSS of each process at start and end (reported, not asserted)',
      pass: true,
      informational: true,
      details: [],
      info: slots
        .map((s) => {
          const first = rss.get(s.history[0]!.pid);
          const current = rss.get(s.proc.pid);
          const restarted = s.restarts ? ` (restarted ${s.restarts}×; the current pid from ${mb(current?.startKb)})` : '';
          return `${s.name} ${mb(first?.startKb)} → ${mb(current?.endKb)}${restarted}`;
        })
        .join(', '),
    });
    invariants.sort((a, b) => a.id - b.id);
    mark('checks', checkStart);

    // Evidence for each payment a breach names: its row, its jobs, and what the clients, the service and
    // the processor each saw of it, on one clock (time from the start of the load).
    const evidence: string[] = [];
    const at = (t: number) => `+${((t - loadStart) / 1000).toFixed(2)}s`;
    const named = invariants.filter((i) => !i.pass).flatMap((i) => i.details.flatMap((d) => d.match(/\b(?:ch|re)_[A-Za-z0-9_-]{8,}/g) ?? []));
    for (const id of [...new Set(named)].slice(0, 6)) {
      const table = id.startsWith('ch_') ? 'charges' : 'refunds';
      const kind = table === 'charges' ? 'charge' : 'refund';
      const row = (
        await sql<{ r: Record<string, unknown> }>`select to_jsonb(p) - 'metadata' - 'description' as r from ${sql.table(table)} p where id = ${id}`.execute(database)
      ).rows[0]?.r;
      if (!row) continue;
      const clientKey = (kind === 'charge' ? charges : refunds).find((c) => c.id === id)?.client_key ?? undefined;
      const processorKey = String(row.processor_idempotency_key);
      const keyUuid = processorKey.replace(/^(charge|refund)_/, '');
      evidence.push(`${kind} ${id} (client key ${clientKey}, processor key ${processorKey}): ${JSON.stringify(row)}`);
      const jobRows = (
        await sql<{ j: Record<string, unknown> }>`
          select jsonb_build_object('id', id, 'name', name, 'state', state, 'retry_count', retry_count, 'created_on', created_on,
                                    'start_after', start_after, 'started_on', started_on, 'completed_on', completed_on, 'output', output) as j
          from pgboss.job where singleton_key = ${`${kind}:${id}`} or data->>'id' = ${id} order by created_on`.execute(database)
      ).rows;
      for (const { j } of jobRows) evidence.push(`  job ${JSON.stringify(j)}`);
      const jobIds = jobRows.map(({ j }) => String(j.id));
      const requestIds = new Set<string>();
      const events: [number, string][] = [];
      for (const a of clientKey ? (attemptsByKey.get(clientKey) ?? []) : []) {
        if (a.requestId) requestIds.add(a.requestId);
      }
      for (const c of calls.filter((x) => x.key === clientKey)) {
        events.push([c.startedAt, `client  ${c.op} #${c.seq} to api#${c.api} starts`]);
        events.push([c.endedAt, `client  ${c.op} #${c.seq} told ${label(c.outcome)}; attempts ${(attemptsByKey.get(clientKey!) ?? []).filter((a) => a.api === c.api).map((a) => `${a.status}${a.code ? `/${a.code}` : ''} ${a.ms}ms ${a.requestId ?? ''}`).join(', ')}`]);
      }
      for (const s of slots) {
        for (const p of s.history) {
          for (const l of p.lines) {
            const text = JSON.stringify(l);
            const rid = typeof l.request_id === 'string' ? l.request_id : undefined;
            const mentions = text.includes(id) || (clientKey && text.includes(clientKey)) || text.includes(keyUuid) || jobIds.some((j) => text.includes(j));
            if (!mentions && !(rid && requestIds.has(rid))) continue;
            const { time, level, msg, service: _service, pid: _pid, hostname: _host, ...rest } = l as Record<string, unknown>;
            events.push([Date.parse(String(time)), `${s.name}/${p.pid} [${level}] ${String(msg)} ${JSON.stringify(rest).slice(0, 400)}`]);
            if (rid?.startsWith('job_')) requestIds.add(rid);
          }
        }
      }
      for (const r of sim.requests) {
        if (r.key !== processorKey && !r.path.endsWith(`/${processorKey}`)) continue;
        events.push([r.at, `processor ${r.method} ${r.path} (mode ${r.mode}, request ${r.requestId ?? '-'}): ${r.status ?? 'no answer'} after ${r.ms ?? '?'} ms`]);
      }
      for (const e of ledger.entries.filter((x) => x.idempotency_key === processorKey)) events.push([Date.parse(e.created), `ledger  ${e.type} ${e.id} ${e.status} ${e.amount}`]);
      // An orphaned job: why nothing runs it, and what the process that ran its claim logged right after.
      for (const { j } of jobRows) {
        const cause = causes.get(String(j.id));
        if (!cause) continue;
        evidence.push(`  orphaned job ${j.id}: ${cause.text}`);
        if (!cause.process || cause.lastAt === undefined) continue;
        const seen = new Set<string>();
        for (const l of cause.process.lines) {
          const t = Date.parse(String(l.time));
          const msg = `${String(l.msg)} ${String((l.err as { message?: string } | undefined)?.message ?? l.reason ?? '')}`.slice(0, 200);
          if (t < cause.lastAt || t > cause.lastAt + 1500 || (l.level as number) < 40 || seen.has(msg)) continue;
          seen.add(msg);
          events.push([t, `${cause.process.name}/${cause.process.pid} [${l.level}] after job ${String(j.id).slice(0, 8)}: ${msg}`]);
        }
      }
      for (const [t, line] of events.sort((a, b) => a[0] - b[0])) evidence.push(`  ${at(t).padStart(8)} ${line}`);
    }

    // ---------------------------------------------------------------- report
    const payCalls = calls.filter((c) => c.kind !== 'read');
    const reads = calls.filter((c) => c.kind === 'read');
    const retries = attempts.filter((a) => a.attempt > 1);
    report.push('timeline (time from the start of the load):', ...timeline.map((l) => `  ${l}`));
    if (skipped.length) report.push(`  planned but not started (no time left before the load ended): ${skipped.join(', ')}`);
    report.push(
      `faults injected: ${countBy(
        [...faultCounts].flatMap(([k, n]) => Array<string>(n).fill(k)),
        (k) => k,
      )}`,
      `requests: ${calls.length} logical calls (${countBy(calls, (c) => c.op)})`,
      `attempts: ${attempts.length} HTTP attempts, ${retries.length} of them retries (attempt > 1); by answer: ${countBy(attempts, (a) => (a.status === 0 ? `0 ${a.code ?? 'no answer'}` : `${a.status}${a.code ? ` ${a.code}` : ''}`))}`,
      `final answers to creates: ${countBy(payCalls.filter((c) => c.op !== 'recovery'), (c) => label(c.outcome))}`,
      `final answers to reads: ${countBy(reads, (c) => label(c.outcome))}`,
      `recovery retries after the heal: ${recovered.length} (${countBy(recovered, (c) => label(c.outcome))})`,
      `rows: charges ${charges.length} (${countBy(charges, (c) => `${c.status}${c.failure_code ? ` ${c.failure_code}` : ''}`)}); refunds ${refunds.length} (${countBy(refunds, (r) => `${r.status}${r.failure_code ? ` ${r.failure_code}` : ''}`)}); idempotency keys ${keys.length} (${countBy(keys, (k) => k.recovery_point)})`,
      `processor: ledger ${ledger.entries.length} entries (${countBy(ledger.entries, (e) => `${e.type} ${e.status}`)}); requests ${JSON.stringify(ledger.requests)}; voided keys ${ledger.voided.length}`,
    );
    const workerLines = slots.filter((s) => s.role === 'worker').flatMap((s) => s.history.flatMap((p) => p.lines));
    const apiLines = slots.filter((s) => s.role === 'api').flatMap((s) => s.history.flatMap((p) => p.lines));
    const msgs = (lines: typeof workerLines, re: RegExp) => lines.filter((l) => re.test(String(l.msg)));
    report.push(
      `reconciliation: failed processor_unavailable ${charges.filter((c) => c.failure_code === 'processor_unavailable').length} charges + ${refunds.filter((r) => r.failure_code === 'processor_unavailable').length} refunds; most flagged at once (sampled) ${maxFlagged}; still flagged at the end ${charges.filter((c) => c.reconcile_since).length + refunds.filter((r) => r.reconcile_since).length}`,
      `  settle jobs: ${countBy(msgs(workerLines, /^settle job: /), (l) => String(l.result))}; reconcile jobs: ${countBy(msgs(workerLines, /^reconcile job: /), (l) => String(l.result))}`,
      `  completer finished ${msgs(workerLines, /^completer finished/).length} abandoned requests (${msgs(workerLines, /^completer could not finish/).length} tries deferred); sweep re-drove ${msgs(workerLines, /^sweep gave pending/).reduce((n, l) => n + (Array.isArray(l.payments) ? l.payments.length : 0), 0)} payments; dead letters ${msgs(workerLines, /dead-lettered/).length}; anomalies ${msgs([...workerLines, ...apiLines], /^anomaly/).length}`,
      `  job table: ${jobs.map((j) => `${j.name}/${j.state} ${j.n}`).join(', ') || 'empty'}; orphaned (active over ${ORPHAN_AFTER_SECONDS} s, no handler): ${orphanRows.map((o) => `${o.name} ${o.id} for ${o.singleton_key} since ${at(o.started_on.getTime())}`).join(', ') || 'none'}`,
      `  error-level log lines: ${countBy(
        [...workerLines, ...apiLines].filter((l) => typeof l.level === 'number' && l.level >= 50),
        (l) => String(l.msg).slice(0, 80),
      )}`,
    );
    report.push('processes (RSS from /proc/<pid>/status VmRSS; reported, not asserted):');
    for (const s of slots) {
      const lines = s.history.map((p) => {
        const r = rss.get(p.pid);
        const exit = p.exit();
        const how = exit ? `exited (code ${exit.code}, signal ${exit.signal})` : p.alive() ? 'alive' : 'gone';
        return `pid ${p.pid} rss start ${mb(r?.startKb)} end ${mb(r?.endKb)} max ${mb(r?.maxKb)}, ${how}`;
      });
      report.push(`  ${s.name}: ${s.restarts} restart(s); ${lines.join('; ')}`);
    }
    if (evidence.length) report.push('evidence (each payment a breach names; time from the start of the load):', ...evidence.map((l) => `  ${l}`));
    if (options.keepLogs || invariants.some((i) => !i.pass) || harness.length) {
      // Everything, for reading afterwards: each process's log lines and stderr, what the processor saw,
      // every client call and attempt. Times in the files are epoch ms; the load started at loadStart.
      const dir = await mkdtemp(path.join(tmpdir(), `soak-${seed}-`));
      for (const s of slots) {
        for (const p of s.history) {
          await writeFile(path.join(dir, `${s.name.replace('#', '')}-${p.pid}.jsonl`), p.lines.map((l) => JSON.stringify(l)).join('\n'));
          if (p.stderr) await writeFile(path.join(dir, `${s.name.replace('#', '')}-${p.pid}.stderr`), p.stderr);
        }
      }
      await writeFile(path.join(dir, 'processor-requests.jsonl'), sim.requests.map((r) => JSON.stringify(r)).join('\n'));
      await writeFile(path.join(dir, 'calls.jsonl'), calls.map((c) => JSON.stringify(c)).join('\n'));
      await writeFile(path.join(dir, 'attempts.jsonl'), attempts.map((a) => JSON.stringify(a)).join('\n'));
      await writeFile(path.join(dir, 'timeline.txt'), `load started at ${loadStart} (${new Date(loadStart).toISOString()})\n${timeline.join('\n')}\n`);
      report.push(`logs kept in ${dir} (process logs, processor requests, client calls and attempts, timeline)`);
    }
    if (harness.length) report.push(`harness problems: ${harness.join('; ')}`);
  } catch (err) {
    harness.push(`the soak stopped early: ${String((err as Error)?.stack ?? err)}`);
    log(`the soak stopped early: ${String((err as Error)?.message ?? err)}`);
  } finally {
    // ---------------------------------------------------------------- teardown
    const teardownStart = Date.now();
    tearingDown = true;
    clearInterval(rssTimer);
    for (const proc of frozen) proc.child.kill('SIGCONT');
    const problems: string[] = [];
    const step = async (what: string, work: () => Promise<unknown>) => {
      await work().catch((err) => problems.push(`${what}: ${String(err)}`));
    };
    await step('processes', () => Promise.all(slots.map((s) => s.proc.stop(5000))));
    await step('simulator', async () => simulator?.close());
    await step('webhook receiver', async () => receiver?.close());
    await step('soak database handle', async () => within(db?.destroy() ?? Promise.resolve(), 5000));
    await step('cluster', async () => cluster?.destroy());
    timings.teardown = Date.now() - teardownStart;
    if (problems.length) harness.push(`teardown: ${problems.join('; ')}`);
  }

  timings.total = Date.now() - began;
  report.push(`timings: ${Object.entries(timings).map(([k, v]) => `${k} ${secs(v)}`).join(', ')}`);
  if (!invariants.length) {
    invariants = [{ id: 0, name: 'the soak ran to its checks', pass: false, details: harness.length ? harness : ['no checks ran'] }];
  }
  const breaches = invariants.flatMap((i) => (i.pass ? [] : i.details.map((d) => `(${i.id}) ${i.name}: ${d}`)));
  for (const h of harness) breaches.push(`harness: ${h}`);
  report.push('invariants:', ...invariants.map((i) => `  ${i.informational ? 'INFO' : i.pass ? 'PASS' : 'FAIL'} (${i.id}) ${i.name}${i.info ? ` — ${i.info}` : ''}`));
  return { breaches, report, invariants };
}

export function label(o: Outcome): string {
  switch (o.kind) {
    case 'payment':
      return `${o.http} ${o.http === 402 ? (o.code ?? o.status) : o.status}`;
    case 'error':
      return `${o.http} ${o.code ?? ''}`.trim();
    case 'read':
      return 'ok';
    case 'exception':
      return `exception ${o.message.slice(0, 60)}`;
  }
}
