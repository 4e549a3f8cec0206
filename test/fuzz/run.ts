// npm run fuzz [-- --runs N --seed S --endpoint 'POST /v1/charges' --path P --deadline MS --no-shrink
//                  --no-main --main-runs N --main-only]
//
// Builds its own world (a fresh database, the processor simulator, the service from compose() on port 0,
// one account), fuzzes every endpoint with runFuzz (--runs per endpoint, 10000 by default; the seed is
// Date.now() unless given), prints the counts by endpoint and answer, the slowest answer, and each kind of
// violation with its first input, fast-check's shrunk counterexample and the command that replays it;
// exits 1 on any violation.
//
// Then, unless --no-main, a second short pass (--main-runs per endpoint, 200) against the real process
// (`src/main.ts api`, on the same database): requests malformed at the HTTP level only, which Node's HTTP
// server answers before the app does, so only that process (with its clientError handler) shows what a
// client really gets; there they too must be problem+json. --main-only runs that pass alone (to replay).
import { parseArgs } from 'node:util';
import { startService, waitForReady } from '../helpers/processes.ts';
import { freePort } from '../helpers/ports.ts';
import { ENDPOINTS, type Endpoint, type FuzzReport, formatCounts, formatFindings, runFuzz } from './fuzz.ts';
import { startWorld } from './world.ts';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '10000' },
    seed: { type: 'string' },
    endpoint: { type: 'string', multiple: true },
    path: { type: 'string' },
    deadline: { type: 'string', default: '2000' },
    'no-shrink': { type: 'boolean', default: false },
    'no-main': { type: 'boolean', default: false },
    'main-runs': { type: 'string', default: '200' },
    'main-only': { type: 'boolean', default: false },
  },
  strict: true,
});

const runs = Number(values.runs);
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const deadlineMs = Number(values.deadline);
const endpoints = (values.endpoint ?? [...ENDPOINTS]) as Endpoint[];
for (const e of endpoints) {
  if (!(ENDPOINTS as readonly string[]).includes(e)) {
    process.stderr.write(`unknown endpoint ${JSON.stringify(e)}; one of: ${ENDPOINTS.join(', ')}\n`);
    process.exit(2);
  }
}
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(seed) || !Number.isFinite(deadlineMs)) {
  process.stderr.write('--runs and --seed take integers, --deadline milliseconds\n');
  process.exit(2);
}

const say = (line: string) => process.stdout.write(`${line}\n`);

function summary(title: string, report: FuzzReport) {
  say(`\n${title}: ${report.requests} requests in ${(report.elapsedMs / 1000).toFixed(1)} s (${(report.requests / (report.elapsedMs / 1000)).toFixed(0)} req/s)`);
  say(formatCounts(report.counts));
  if (report.slowest) {
    say(`slowest answer: ${report.slowest.ms.toFixed(1)} ms, ${report.slowest.status}, for:\n${report.slowest.input.split('\n').map((l) => `  ${l.slice(0, 300)}`).join('\n')}`);
  }
  say(`rows of the fuzzed account at the end: ${JSON.stringify(report.rows)}`);
}

say(`fuzz: seed ${seed}, ${runs} runs per endpoint, deadline ${deadlineMs} ms (replay: npm run fuzz -- --seed ${seed} --runs ${runs})`);
const world = await startWorld();
say(`world: ${world.where}, service at ${world.baseUrl}, processor simulator at ${world.processorUrl}`);
let failed = false;
// Ctrl-C or a kill still stops the embedded Postgres and drops the database.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    say(`\n${signal}: tearing down`);
    void world.close().finally(() => process.exit(130));
  });
}
try {
  if (!values['main-only']) await inProcess();
  if (!values['no-main'] && (!values.path || values['main-only'])) await mainProcess();
} finally {
  await world.close();
}
say(failed ? `\nFAILED (seed ${seed})` : `\nOK: no violations (seed ${seed})`);
process.exit(failed ? 1 : 0);

async function inProcess() {
  const report = await runFuzz({
    baseUrl: world.baseUrl,
    auth: { Authorization: `Bearer ${world.apiKey}` },
    apiKey: world.apiKey,
    runsPerEndpoint: runs,
    seed,
    deadlineMs,
    rowCounts: world.rowCounts,
    endpoints,
    ...(values.path ? { path: values.path } : {}),
    shrink: !values['no-shrink'],
    serverLog: () => world.serverLog.drain(),
    log: say,
  });
  summary('in-process service (compose + listen, as the tests build it)', report);
  if (report.violationCount) {
    failed = true;
    say(`\n${report.violationCount} violation(s):\n`);
    say(formatFindings(report));
  }
}

async function mainProcess() {
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const service = startService('api', {
    DATABASE_URL: world.databaseUrl,
    PORT: String(port),
    HOST: '127.0.0.1',
    PROCESSOR_URL: world.processorUrl,
    MIGRATE_ON_START: 'false',
    LOG_LEVEL: 'warn',
  });
  try {
    await waitForReady(baseUrl, service);
    let seen = 0;
    const main = await runFuzz({
      baseUrl,
      auth: { Authorization: `Bearer ${world.apiKey}` },
      apiKey: world.apiKey,
      runsPerEndpoint: Number(values['main-runs']),
      seed,
      deadlineMs,
      rowCounts: world.rowCounts,
      endpoints,
      shrink: !values['no-shrink'],
      ...(values.path ? { path: values.path } : {}),
      httpLayer: 'problem',
      httpLayerOnly: true,
      replayFlags: '--main-only',
      serverLog: () => {
        const fresh = service.lines.slice(seen).map((l) => JSON.stringify(l));
        seen = service.lines.length;
        return fresh;
      },
      log: say,
    });
    summary('src/main.ts api process, HTTP-level malformations only (answers must be problem+json too)', main);
    if (main.violationCount) {
      failed = true;
      say(`\n${main.violationCount} violation(s) from the main.ts process:\n`);
      say(formatFindings(main));
    }
  } finally {
    await service.stop();
  }
}
