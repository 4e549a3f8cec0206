// The protection lab's machinery: one run of the timeline (warm-up, processor hanging, processor down,
// processor healthy, a tail that lets pending charges settle) against real processes (a Postgres cluster,
// the simulator, an api and a worker), with protections off or on, measured every second per class of
// request: 70 % database-only reads, 30 % new charges, offered open-loop through the client SDK.
import { readFile, writeFile } from 'node:fs/promises';
import { createClient, PaymentsError, type PaymentsClient } from '../src/client/index.ts';
import { createAccount } from '../src/accounts/accounts.service.ts';
import { loadConfig } from '../src/config.ts';
import { createDb, createPool, migrateToLatest } from '../src/db/database.ts';
import { createLogger } from '../src/logger.ts';
import { seededRandom } from '../src/simulator/simulator.ts';
import { freePort, spawnNode, type Teardown, waitForHttp } from '../bench/lib/processes.ts';

export type Mode = 'off' | 'on';
export type RequestClass = 'read' | 'charge';
export const PHASES = ['warm-up', 'hang', 'down', 'recovery', 'tail'] as const;
export type PhaseName = (typeof PHASES)[number];

/** Seconds of each phase; the tail lasts until nothing is pending or `tailMax` has passed. */
export interface Timeline {
  warmup: number;
  hang: number;
  down: number;
  recovery: number;
  tailMax: number;
}

export interface LabOptions {
  /** Where the processes write their logs. */
  dir: string;
  /** Postgres connection string of a database server the lab may create databases on. */
  adminUrl: string;
  timeline: Timeline;
  /** Requests offered per second, both classes together. */
  rate: number;
  seed: number;
  /** MAX_IN_FLIGHT_REQUESTS of the api: the pool the processor's hang can fill. */
  inFlightCap: number;
  /** With protections off, the one processor timeout left ("generous"). */
  offAttemptTimeoutMs: number;
  /** How long the client waits for one answer. */
  clientTimeoutMs: number;
  log: (line: string) => void;
}

/** With protections off: the same code, configured without them (each value within what the config accepts). */
export function protectionsOff(options: Pick<LabOptions, 'offAttemptTimeoutMs'>): Record<string, string> {
  return {
    PROCESSOR_BREAKER_ENABLED: 'false',
    PROCESSOR_MAX_ATTEMPTS: '1',
    PROCESSOR_ATTEMPT_TIMEOUT_MS: String(options.offAttemptTimeoutMs),
    REQUEST_TIMEOUT_MS: '120000',
    PROCESSOR_MAX_CONCURRENCY: '10000',
  };
}

export interface ClassSecond {
  offered: number;
  /** Answers received in this second (of requests offered whenever). */
  completed: number;
  /** Of the requests offered in this second: how many succeeded (reads 200; charges 201, 202 or 402). */
  ok: number;
  /** Of the requests offered in this second: statuses that were not a success ("0" for no answer). */
  errors: Record<string, number>;
  /** Latency of the requests offered in this second, from when each was due (ms). */
  p50: number | null;
  p99: number | null;
}

export interface Second {
  t: number;
  phase: PhaseName;
  read: ClassSecond;
  charge: ClassSecond;
  /** The api's http_requests_in_flight at the end of the second (null: no answer). */
  inFlight: number | null;
  /** 0 closed, 1 half-open, 2 open (null: no answer). */
  breaker: number | null;
  /** Charges pending in our database. */
  pending: number | null;
  /** Settle jobs that settled a payment in this second (the worker's settle_jobs_total). */
  settled: number | null;
}

export interface RequestRecord {
  cls: RequestClass;
  /** Seconds from the start of the timeline when it was due. */
  due: number;
  ms: number;
  status: number;
  code?: string;
  id?: string;
}

export interface PhaseSummary {
  phase: PhaseName;
  read: { offered: number; successRate: number | null; p99: number | null };
  charge: { offered: number; statuses: Record<string, number>; p99: number | null };
}

export interface Reconciliation {
  ok: boolean;
  line: string;
  problems: string[];
}

export interface RunResult {
  mode: Mode;
  env: Record<string, string>;
  inFlightCap: number;
  phases: { name: PhaseName; start: number; end: number }[];
  seconds: Second[];
  summary: PhaseSummary[];
  /** Seconds from the processor's recovery until no charge was pending (null: not within the tail). */
  settledAfterRecovery: number | null;
  /** The api's circuit changes, from its log: [second, state] (0 closed, 1 half-open, 2 open). */
  breakerChanges: [number, number][];
  reconciliation: Reconciliation;
  requests: number;
}

export function percentile(values: number[], p: number): number | null {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const isOk = (cls: RequestClass, status: number) => (cls === 'read' ? status === 200 : status === 201 || status === 202 || status === 402);

/** Scrapes one gauge or counter sum from a Prometheus text page. */
function metric(text: string, name: string, labels?: RegExp): number | null {
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue;
    if (labels && !labels.test(line)) continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function scrape(url: string): Promise<string | null> {
  return fetch(url, { signal: AbortSignal.timeout(900) }).then(
    (r) => r.text(),
    () => null,
  );
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One run of the timeline with protections `mode`, on processes of its own and a database of its own. */
export async function runMode(mode: Mode, options: LabOptions, teardown: Teardown): Promise<RunResult> {
  const { timeline, log } = options;
  const env = mode === 'off' ? protectionsOff(options) : {};

  // A database of its own, migrated, with one account.
  const adminPool = createPool(options.adminUrl, loadConfig({}), createLogger('silent'));
  const admin = createDb(adminPool);
  const name = `lab_${mode}_${Date.now()}`;
  await adminPool.query(`create database ${name}`);
  await admin.destroy();
  const url = new URL(options.adminUrl);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  const pool = createPool(databaseUrl, loadConfig({}), createLogger('silent'));
  const db = createDb(pool);
  teardown.add(`${mode}: database connection`, () => db.destroy());
  await migrateToLatest(db);
  const { apiKey } = await createAccount(db, `lab ${mode}`);

  const [simPort, apiPort, workerPort] = [await freePort(), await freePort(), await freePort()];
  const simulatorUrl = `http://127.0.0.1:${simPort}`;
  const apiUrl = `http://127.0.0.1:${apiPort}`;
  const workerUrl = `http://127.0.0.1:${workerPort}`;
  const common = {
    PATH: process.env.PATH,
    DATABASE_URL: databaseUrl,
    PROCESSOR_URL: simulatorUrl,
    MIGRATE_ON_START: 'false',
    LOG_LEVEL: 'warn',
    RATE_LIMIT_REQUESTS: '0',
    ...env,
  };
  // Each run's logs start empty (the circuit's changes are read back from the api's).
  for (const name of ['simulator', 'api', 'worker']) await writeFile(`${options.dir}/${mode}-${name}.log`, '');
  const simulator = spawnNode(`${mode} simulator`, ['src/simulator/main.ts', '--port', String(simPort), '--host', '127.0.0.1'], {
    env: { PATH: process.env.PATH },
    logFile: `${options.dir}/${mode}-simulator.log`,
  });
  teardown.add(`${mode} simulator`, () => simulator.stop(2000));
  const api = spawnNode(`${mode} api`, ['src/main.ts', 'api'], {
    env: { ...common, PORT: String(apiPort), MAX_IN_FLIGHT_REQUESTS: String(options.inFlightCap) },
    logFile: `${options.dir}/${mode}-api.log`,
  });
  teardown.add(`${mode} api`, () => api.stop(2000));
  const worker = spawnNode(`${mode} worker`, ['src/main.ts', 'worker'], {
    env: { ...common, WORKER_METRICS_PORT: String(workerPort), JOB_POLL_INTERVAL_SECONDS: '0.5', LOG_LEVEL: 'info' },
    logFile: `${options.dir}/${mode}-worker.log`,
  });
  teardown.add(`${mode} worker`, () => worker.stop(2000));
  await Promise.all([waitForHttp(simulator, `${simulatorUrl}/livez`), waitForHttp(api, `${apiUrl}/readyz`), waitForHttp(worker, `${workerUrl}/livez`)]);
  const chaos = async (chaosMode: string) => {
    const res = await fetch(`${simulatorUrl}/chaos`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mode: chaosMode }) });
    if (!res.ok) throw new Error(`chaos ${chaosMode}: ${res.status}`);
  };

  const client: PaymentsClient = createClient({ baseUrl: apiUrl, apiKey, maxAttempts: 1, timeoutMs: options.clientTimeoutMs });
  // Charges to read: a few before the clock starts, then every charge the load creates.
  const known: string[] = [];
  for (let i = 0; i < 10; i++) known.push((await client.charges.create({ amount: 500 + i, currency: 'usd', source: 'tok_visa' })).id);
  const accepted = new Set<string>(known);

  const phases: RunResult['phases'] = [];
  let at = 0;
  for (const [phase, seconds] of [
    ['warm-up', timeline.warmup],
    ['hang', timeline.hang],
    ['down', timeline.down],
    ['recovery', timeline.recovery],
  ] as const) {
    phases.push({ name: phase, start: at, end: at + seconds });
    at += seconds;
  }
  const loadEnd = at;
  const random = seededRandom(options.seed); // the same offered sequence in both runs
  const records: RequestRecord[] = [];
  const completedAt: { cls: RequestClass; t: number }[] = [];
  let outstanding = 0;
  const started = performance.now();
  const startedAt = Date.now();
  const now = () => (performance.now() - started) / 1000;

  const offer = (cls: RequestClass, due: number, pick: number) => {
    outstanding += 1;
    const call: Promise<{ id?: string } | unknown> =
      cls === 'charge'
        ? client.charges.create({ amount: 100 + Math.floor(pick * 9000), currency: 'usd', source: 'tok_visa' })
        : pick < 0.5
          ? client.charges.retrieve(known[Math.floor(pick * 2 * known.length)]!)
          : client.charges.list({ limit: 10 });
    void call.then(
      (body) => {
        const charge = cls === 'charge' ? (body as { id: string; status: string }) : undefined;
        if (charge) {
          known.push(charge.id);
          accepted.add(charge.id);
        }
        const status = charge ? (charge.status === 'pending' ? 202 : 201) : 200;
        records.push({ cls, due, ms: (now() - due) * 1000, status, id: charge?.id });
      },
      (err: unknown) => {
        const status = err instanceof PaymentsError ? err.status : 0;
        const code = err instanceof PaymentsError ? err.code : 'client_error';
        // A declined charge is an answer too; its body carries the failed charge.
        records.push({ cls, due, ms: (now() - due) * 1000, status, code });
      },
    ).finally(() => {
      outstanding -= 1;
      completedAt.push({ cls, t: now() });
    });
  };

  // The sampler: once a second, what the processes say about themselves.
  const samples = new Map<number, Pick<Second, 'inFlight' | 'breaker' | 'pending' | 'settled'>>();
  let lastSettled: number | null = null;
  let sampling = true;
  const sampler = (async () => {
    for (let second = 1; sampling; second++) {
      await sleep(Math.max(0, second * 1000 - (performance.now() - started)));
      const [apiText, workerText, pending] = await Promise.all([
        scrape(`${apiUrl}/metrics`),
        scrape(`${workerUrl}/metrics`),
        pool
          .query<{ n: string }>(`select count(*) as n from charges where status = 'pending'`)
          .then((r) => Number(r.rows[0]!.n))
          .catch(() => null),
      ]);
      const settledTotal = workerText === null ? null : metric(workerText, 'settle_jobs_total', /result="settled"/) ?? 0;
      samples.set(second - 1, {
        inFlight: apiText === null ? null : metric(apiText, 'http_requests_in_flight'),
        breaker: apiText === null ? null : metric(apiText, 'processor_circuit_state'),
        pending,
        settled: settledTotal === null || lastSettled === null ? (settledTotal === null ? null : 0) : settledTotal - lastSettled,
      });
      if (settledTotal !== null) lastSettled = settledTotal;
    }
  })();

  // The load: open loop, one request every 1/rate s whatever the answers do; the faults on the clock.
  log(`${mode}: load at ${options.rate}/s for ${loadEnd} s (warm-up ${timeline.warmup}, hang ${timeline.hang}, down ${timeline.down}, recovery ${timeline.recovery})`);
  const switches: [number, string][] = [
    [phases[1]!.start, 'hang'],
    [phases[2]!.start, 'down'],
    [phases[3]!.start, 'healthy'],
  ];
  for (let i = 0; ; i++) {
    const due = i / options.rate;
    if (due >= loadEnd) break;
    while (switches.length && switches[0]![0] <= due) {
      const [, chaosMode] = switches.shift()!;
      await chaos(chaosMode);
      log(`${mode}: ${now().toFixed(1)} s processor ${chaosMode}`);
    }
    const wait = due - now();
    if (wait > 0) await sleep(wait * 1000);
    offer(random() < 0.3 ? 'charge' : 'read', due, random());
  }

  // The tail: no more load; wait for every answer and every pending charge to settle.
  const tailStart = loadEnd;
  let settledAfterRecovery: number | null = null;
  while (now() < tailStart + timeline.tailMax) {
    const pending = await pool
      .query<{ n: string }>(`select count(*) as n from charges where status = 'pending'`)
      .then((r) => Number(r.rows[0]!.n))
      .catch(() => -1);
    if (pending === 0 && outstanding === 0) break;
    await sleep(200);
  }
  const end = Math.ceil(now());
  phases.push({ name: 'tail', start: tailStart, end });
  sampling = false;
  await sampler;

  // When the last pending charge settled: the first sampled second after recovery from which none is pending.
  const recoveryStart = phases[3]!.start;
  for (let s = Math.floor(recoveryStart); s < end; s++) {
    const rest = [...samples.entries()].filter(([t]) => t >= s);
    if (rest.length && rest.every(([, v]) => v.pending === 0)) {
      settledAfterRecovery = s + 1 - recoveryStart;
      break;
    }
  }

  const seconds = perSecond(records, completedAt, samples, phases, end);
  const reconciliation = await reconcile(pool, simulatorUrl, accepted, outstanding);
  log(`${mode}: ${reconciliation.line}`);
  return {
    mode,
    env,
    inFlightCap: options.inFlightCap,
    phases,
    seconds,
    summary: summarize(records, phases),
    settledAfterRecovery,
    breakerChanges: await breakerChanges(`${options.dir}/${mode}-api.log`, startedAt),
    reconciliation,
    requests: records.length,
  };
}

function phaseAt(phases: RunResult['phases'], t: number): PhaseName {
  return (phases.find((p) => t >= p.start && t < p.end) ?? phases.at(-1)!).name;
}

function classSecond(records: RequestRecord[], completed: number): ClassSecond {
  const errors: Record<string, number> = {};
  let ok = 0;
  for (const r of records) {
    if (isOk(r.cls, r.status)) ok += 1;
    else errors[String(r.status)] = (errors[String(r.status)] ?? 0) + 1;
  }
  const ms = records.map((r) => r.ms);
  return { offered: records.length, completed, ok, errors, p50: percentile(ms, 50), p99: percentile(ms, 99) };
}

function perSecond(
  records: RequestRecord[],
  completedAt: { cls: RequestClass; t: number }[],
  samples: Map<number, Pick<Second, 'inFlight' | 'breaker' | 'pending' | 'settled'>>,
  phases: RunResult['phases'],
  end: number,
): Second[] {
  const seconds: Second[] = [];
  for (let t = 0; t < end; t++) {
    const inSecond = (cls: RequestClass) => records.filter((r) => r.cls === cls && r.due >= t && r.due < t + 1);
    const doneIn = (cls: RequestClass) => completedAt.filter((c) => c.cls === cls && c.t >= t && c.t < t + 1).length;
    const sample = samples.get(t) ?? { inFlight: null, breaker: null, pending: null, settled: null };
    seconds.push({ t, phase: phaseAt(phases, t), read: classSecond(inSecond('read'), doneIn('read')), charge: classSecond(inSecond('charge'), doneIn('charge')), ...sample });
  }
  return seconds;
}

export function summarize(records: RequestRecord[], phases: RunResult['phases']): PhaseSummary[] {
  return phases
    .filter((p) => p.name !== 'tail')
    .map((p) => {
      const inPhase = records.filter((r) => r.due >= p.start && r.due < p.end);
      const reads = inPhase.filter((r) => r.cls === 'read');
      const charges = inPhase.filter((r) => r.cls === 'charge');
      const statuses: Record<string, number> = {};
      for (const r of charges) statuses[String(r.status)] = (statuses[String(r.status)] ?? 0) + 1;
      return {
        phase: p.name,
        read: {
          offered: reads.length,
          successRate: reads.length ? reads.filter((r) => r.status === 200).length / reads.length : null,
          p99: percentile(
            reads.map((r) => r.ms),
            99,
          ),
        },
        charge: {
          offered: charges.length,
          statuses,
          p99: percentile(
            charges.map((r) => r.ms),
            99,
          ),
        },
      };
    });
}

const BREAKER_STATES: Record<string, number> = { closed: 0, half_open: 1, open: 2 };

/** The api's circuit changes as it logged them (a half-open probe lasts less than a sample): [second, state]. */
async function breakerChanges(logFile: string, startedAt: number): Promise<[number, number][]> {
  const changes: [number, number][] = [[0, 0]];
  for (const line of (await readFile(logFile, 'utf8').catch(() => '')).split('\n')) {
    const match = /"time":"([^"]+)".*"msg":"processor circuit (\w+)"/.exec(line);
    const at = Math.round((Date.parse(match?.[1] ?? '') - startedAt) / 100) / 10;
    if (!match || BREAKER_STATES[match[2]!] === undefined || !(at >= 0)) continue;
    changes.push([at, BREAKER_STATES[match[2]!]!]);
  }
  return changes;
}

/**
 * Every charge accounted for once: each one a client was told of exists; none is left pending; each the
 * processor made is in our ledger as succeeded with its reference, exactly once; we hold no success the
 * processor did not make.
 */
export async function reconcile(
  pool: ReturnType<typeof createPool>,
  simulatorUrl: string,
  accepted: Set<string>,
  outstanding: number,
): Promise<Reconciliation> {
  const { rows } = await pool.query<{ id: string; status: string; processor_reference: string | null; processor_idempotency_key: string }>(
    'select id, status, processor_reference, processor_idempotency_key from charges',
  );
  const ledger = ((await (await fetch(`${simulatorUrl}/ledger`)).json()) as { entries: { id: string; type: string; idempotency_key: string; status: string }[] }).entries.filter(
    (e) => e.type === 'charge' && e.status === 'succeeded',
  );
  const problems: string[] = [];
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const id of accepted) if (!byId.has(id)) problems.push(`${id} was answered to a client but is not stored`);
  const byStatus: Record<string, number> = {};
  for (const r of rows) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
  if (byStatus.pending) problems.push(`${byStatus.pending} charges still pending at the end of the tail`);
  const byKey = new Map<string, number>();
  for (const e of ledger) byKey.set(e.idempotency_key, (byKey.get(e.idempotency_key) ?? 0) + 1);
  for (const [key, n] of byKey) if (n > 1) problems.push(`processor charged key ${key} ${n} times`);
  const byRef = new Map(rows.filter((r) => r.processor_reference).map((r) => [r.processor_reference!, r]));
  for (const e of ledger) {
    const row = byRef.get(e.id);
    if (!row || row.status !== 'succeeded' || row.processor_idempotency_key !== e.idempotency_key) {
      problems.push(`processor charge ${e.id} (key ${e.idempotency_key}) is ${row ? `${row.status} here` : 'not in our ledger'}`);
    }
  }
  const ledgerRefs = new Set(ledger.map((e) => e.id));
  for (const r of rows) if (r.status === 'succeeded' && !ledgerRefs.has(r.processor_reference ?? '')) problems.push(`${r.id} succeeded here, not at the processor`);
  if (outstanding) problems.push(`${outstanding} requests still without an answer`);
  const states = Object.entries(byStatus).map(([s, n]) => `${s} ${n}`).join(', ');
  const line =
    `reconciliation: ${rows.length} charges (${states}); ${accepted.size} answered to clients as created; ` +
    `processor ledger ${ledger.length} charges, ${[...byKey.values()].filter((n) => n === 1).length} keys charged once: ` +
    (problems.length ? `FAIL (${problems.length} problems: ${problems.slice(0, 3).join('; ')})` : 'every charge accounted for once');
  return { ok: problems.length === 0, line, problems };
}
