// How the processes stop, run exactly as they are run for real: the Dockerfile's CMD gets `docker stop`'s
// SIGTERM, and `npm start`'s command gets a terminal's Ctrl-C (SIGINT to its whole process group, twice).
// In both, the request in flight completes, new ones are refused, the process exits 0, and nothing it
// started is left running.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSimulator, startSimulator } from '../../src/simulator/simulator.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { makeAccount } from '../helpers/factories.ts';
import { type Gate, startGate } from '../helpers/gate.ts';
import { freePort } from '../helpers/ports.ts';
import { type HttpAnswer, httpRequest, NoAnswerError, startService, stopAllServices, waitForReady } from '../helpers/processes.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The exec-form CMD of the Dockerfile, e.g. ["node", "src/main.ts", "api"]. */
function dockerfileCommand(): string[] {
  const line = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8')
    .split('\n')
    .findLast((l) => l.startsWith('CMD '));
  return JSON.parse(line!.slice(4)) as string[];
}

/** The `npm start` script as an argv (a plain command, no shell syntax in it). */
function npmStartCommand(): string[] {
  const { scripts } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  return scripts.start!.split(' ');
}

/** Pids of every process whose environment holds MARK=`mark`: what a process started, wherever it went. */
async function processesMarked(mark: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const environ = await readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '');
    if (environ.split('\0').includes(`PAYMENTS_TEST_MARK=${mark}`)) found.push(Number(entry));
  }
  return found;
}

// A closed listener refuses a connection; one the kernel had queued just as the listener closed is reset.
// Either way the server never read the request (a row check below confirms nothing was written).
const refused = (err: unknown) => err instanceof NoAnswerError && err.kind === 'network' && /ECONNREFUSED|ECONNRESET/.test(err.message);

/** Polls /readyz: 200 while serving, 503 while draining, then a refused connection once the listener closed. */
async function readinessUntilRefused(baseUrl: string): Promise<number[]> {
  const seen: number[] = [];
  for (;;) {
    const status = await httpRequest('GET', `${baseUrl}/readyz`, { timeoutMs: 5000 }).then(
      (r) => r.status,
      (err: unknown) => {
        if (refused(err)) return 0;
        throw err;
      },
    );
    if (seen.at(-1) !== status) seen.push(status);
    if (status === 0) return seen;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

let simulator: RunningSimulator;
let gate: Gate;
beforeAll(async () => {
  simulator = await startSimulator();
});
afterEach(async () => {
  await stopAllServices();
  await gate?.close();
});
afterAll(async () => {
  await simulator.close();
});

describe("SIGTERM to the Dockerfile's command (docker stop)", () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase();
  });
  afterAll(async () => {
    await t.destroy();
  });

  // Up to 30 s to start, 10 s for the charge to arrive, the 3 s drain, then the held charge (30 s at most): 90 s.
  it('finishes the charge in flight, refuses new requests, exits 0 and leaves nothing running', { timeout: 90_000 }, async () => {
    const command = dockerfileCommand();
    // node itself, PID 1 (no npm, no shell), with nothing but its own flags before the entry point.
    expect(command[0]).toBe('node');
    expect(command.slice(-2)).toEqual(['src/main.ts', 'api']);
    expect(command.slice(1, -2).every((word) => word.startsWith('--'))).toBe(true);
    const { auth } = await makeAccount(t.db);
    gate = await startGate(simulator.url);
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const mark = randomBytes(6).toString('hex');
    const api = startService(
      'api',
      {
        DATABASE_URL: t.url,
        PROCESSOR_URL: gate.url,
        PORT: String(port),
        PAYMENTS_TEST_MARK: mark,
        // The 503 phase lasts this long: far above one /readyz probe on a busy machine (the gate holds the charge anyway).
        SHUTDOWN_DRAIN_MS: '3000',
        SHUTDOWN_GRACE_MS: '20000',
        // The gate holds the processor call as long as the test needs: no timeout may end it first.
        PROCESSOR_ATTEMPT_TIMEOUT_MS: '20000',
        REQUEST_TIMEOUT_MS: '25000',
      },
      { command },
    );
    await waitForReady(baseUrl, api);

    const inFlight = httpRequest('POST', `${baseUrl}/v1/charges`, {
      headers: { ...auth, 'idempotency-key': `sigterm-${mark}` },
      body: { amount: 1200, currency: 'usd', source: 'tok_visa' },
      timeoutMs: 30_000,
    });
    inFlight.catch(() => undefined); // awaited below; a failed assertion before then must not leave it unhandled
    await expect.poll(() => gate.arrived(), { timeout: 10_000, interval: 10 }).toBe(1);

    api.child.kill('SIGTERM');
    // Readiness fails first while the listener still answers (load balancers stop sending), then the
    // listener closes: new connections are refused while the charge is still held at the processor.
    // (A first 200 is a readiness probe answered before the process ran its signal handler.)
    expect((await readinessUntilRefused(baseUrl)).join(' ')).toMatch(/^(200 )?503 0$/);
    const late = await httpRequest('POST', `${baseUrl}/v1/charges`, {
      headers: { ...auth, 'idempotency-key': `late-${mark}` },
      body: { amount: 1300, currency: 'usd', source: 'tok_visa' },
    }).then(
      (r: HttpAnswer) => r.status,
      (err: unknown) => (refused(err) ? 'refused' : String(err)),
    );
    expect(late).toBe('refused');
    expect(api.alive()).toBe(true);

    gate.open();
    const answer = await inFlight;
    expect(answer.status).toBe(201);
    expect(answer.body).toMatchObject({ status: 'succeeded', amount: 1200 });
    expect(await api.exited).toEqual({ code: 0, signal: null });
    expect(api.lines.at(-1)?.msg).toBe('stopped');
    expect(await processesMarked(mark)).toEqual([]);
    // The refused request wrote nothing; the one in flight is there once.
    const charges = await t.db.selectFrom('charges').select(['amount', 'status']).execute();
    expect(charges.filter((c) => c.amount === 1300)).toEqual([]);
    expect(charges.filter((c) => c.amount === 1200)).toEqual([{ amount: 1200, status: 'succeeded' }]);
  });
});

describe("Ctrl-C on npm start's command (embedded Postgres)", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'payments-ctrl-c-'));
    await chmod(dir, 0o755); // as root the server runs as `postgres`, who must reach its data directory
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // Up to 90 s for the embedded Postgres and the app to start (as waitForReady below allows), then the drain: 150 s.
  it('drains first, then stops its own Postgres last; a second Ctrl-C is not a crash', { timeout: 150_000 }, async () => {
    const command = npmStartCommand();
    expect(command[0]).toBe('node');
    expect(command.slice(-2)).toEqual(['src/main.ts', 'all']);
    expect(command.slice(1, -2).every((word) => word.startsWith('--'))).toBe(true);
    gate = await startGate(simulator.url);
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const mark = randomBytes(6).toString('hex');
    const dataDir = path.join(dir, 'data');
    const app = startService(
      'all',
      {
        EMBEDDED_PG_DIR: dataDir,
        EMBEDDED_PG_PORT: String(await freePort()),
        PORT: String(port),
        PROCESSOR_PORT: '0',
        PROCESSOR_URL: gate.url,
        PAYMENTS_TEST_MARK: mark,
        PROCESSOR_ATTEMPT_TIMEOUT_MS: '20000',
        REQUEST_TIMEOUT_MS: '25000',
      },
      { command, detached: true, without: ['DATABASE_URL'] },
    );
    await waitForReady(baseUrl, app, 90_000);
    // The first start greets with a demo account's key.
    await expect.poll(() => /sk_test_[\w-]+/.test(app.stdout), { timeout: 10_000, interval: 20 }).toBe(true);
    const apiKey = app.stdout.match(/sk_test_[\w-]+/)![0];
    const postmaster = Number((await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    expect((await processesMarked(mark)).sort()).toEqual(expect.arrayContaining([app.pid, postmaster]));

    const inFlight = httpRequest('POST', `${baseUrl}/v1/charges`, {
      headers: { authorization: `Bearer ${apiKey}`, 'idempotency-key': `ctrl-c-${mark}` },
      body: { amount: 700, currency: 'usd', source: 'tok_visa' },
      timeoutMs: 30_000,
    });
    inFlight.catch(() => undefined); // awaited below; a failed assertion before then must not leave it unhandled
    await expect.poll(() => gate.arrived(), { timeout: 10_000, interval: 10 }).toBe(1);

    // What a terminal does on Ctrl-C: SIGINT to every process of the foreground group. Twice.
    process.kill(-app.pid, 'SIGINT');
    await expect.poll(() => app.lines.some((l) => l.msg?.startsWith('shutting down')), { timeout: 5000, interval: 10 }).toBe(true);
    process.kill(-app.pid, 'SIGINT');
    expect(await readinessUntilRefused(baseUrl)).toContain(0);
    expect(app.alive()).toBe(true);

    gate.open();
    const answer = await inFlight;
    expect(answer.status).toBe(201);
    expect(await app.exited).toEqual({ code: 0, signal: null });
    const said = app.lines.map((l) => l.msg);
    expect(said).toContain('already shutting down');
    expect(said.at(-1)).toBe('stopped');
    // Postgres outlived every connection of the app: none of them was cut off by its shutdown.
    const shutdown = app.lines.findIndex((l) => l.msg?.startsWith('shutting down'));
    expect(app.lines.slice(shutdown).filter((l) => (l.level ?? 0) >= 40)).toEqual([]);
    expect(await processesMarked(mark)).toEqual([]);
  });
});
