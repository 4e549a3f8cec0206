// The fuzzer's short form in the suite: ~150 hostile requests per endpoint against the app on a real port,
// every answer checked (no 5xx, problem+json for every 4xx, in time, no row written by a refused request).
// `npm run fuzz` is the long form. FUZZ_SEED and FUZZ_RUNS override the seed and the runs per endpoint.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestContext, type TestContext } from '../helpers/context.ts';
import { formatCounts, formatFindings, runFuzz } from './fuzz.ts';
import { accountRowCounts } from './world.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 424242);
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);

let ctx: TestContext;
let server: Server;
let baseUrl: string;

beforeAll(async () => {
  // /readyz and /health answer 503 when Postgres takes longer than this: 5 s, far above a query on a busy machine.
  ctx = await createTestContext({ READINESS_TIMEOUT_MS: '5000' });
  server = await new Promise<Server>((resolve) => {
    const s = ctx.app.listen(0, '127.0.0.1', () => resolve(s));
  });
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  await ctx.destroy();
});

describe('fuzzing every endpoint', () => {
  it(`answers ${RUNS} hostile requests per endpoint within the contract (seed ${SEED})`, { timeout: 300_000 }, async () => {
    const { account, apiKey, auth } = await ctx.account();
    let logged = ctx.logs.lines.length;
    const report = await runFuzz({
      baseUrl,
      auth,
      apiKey,
      runsPerEndpoint: RUNS,
      seed: SEED,
      // The app answers by its own deadline; 1 s more for the answer to travel on a busy machine.
      deadlineMs: ctx.config.REQUEST_TIMEOUT_MS + 1000,
      rowCounts: () => accountRowCounts(ctx.t.db, account.id),
      serverLog: () => {
        const fresh = ctx.logs.lines.slice(logged).filter((l) => Number(l.level) >= 40);
        logged = ctx.logs.lines.length;
        return fresh.map((l) => JSON.stringify(l));
      },
    });
    console.log(
      `fuzz seed ${SEED}: ${report.requests} requests (+${report.shrinkRequests} shrinking) in ${(report.elapsedMs / 1000).toFixed(1)} s; slowest ${report.slowest?.ms.toFixed(1)} ms\n${formatCounts(report.counts)}`,
    );
    expect(report.violationCount, formatFindings(report)).toBe(0);
  });
});
