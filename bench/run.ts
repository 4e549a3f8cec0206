// npm run bench: timings that tests never assert. Runs on an embedded Postgres (or DATABASE_URL's server,
// in a database it creates and drops) with the in-process simulator over HTTP.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createAccount } from '../src/accounts/accounts.service.ts';
import { compose } from '../src/compose.ts';
import { loadConfig } from '../src/config.ts';
import { createDb, createPool, migrateToLatest } from '../src/db/database.ts';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { createLogger } from '../src/logger.ts';
import { createProcessorClient } from '../src/processor/processor.client.ts';
import { startSimulator } from '../src/simulator/simulator.ts';

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
const summary = (ms: number[]) => {
  const s = [...ms].sort((a, b) => a - b);
  return `p50 ${percentile(s, 50).toFixed(3)} ms, p95 ${percentile(s, 95).toFixed(3)} ms, p99 ${percentile(s, 99).toFixed(3)} ms, max ${s.at(-1)!.toFixed(3)} ms`;
};

async function openCircuit() {
  const logger = createLogger('silent');
  const config = loadConfig({ PROCESSOR_URL: 'http://127.0.0.1:9', PROCESSOR_MAX_ATTEMPTS: '1', BREAKER_VOLUME_THRESHOLD: '1' });
  const client = createProcessorClient(config, logger);
  const request = { amount: 100, currency: 'usd', source: 'tok_visa', description: null };
  await client.send('charge', request, 'warm', Date.now() + 2000);
  if (client.breakerState() !== 'open') throw new Error('circuit did not open');
  const times: number[] = [];
  for (let i = 0; i < 10_000; i += 1) {
    const started = performance.now();
    const outcome = await client.send('charge', request, `k${i}`, Date.now() + 2000);
    times.push(performance.now() - started);
    if (outcome.kind !== 'unavailable' || outcome.reason !== 'circuit_open') throw new Error('expected a fast failure');
  }
  client.shutdown();
  console.log(`open circuit, 10000 calls: ${summary(times)}`);
}

async function charges(serverUrl: string, total: number, concurrency: number) {
  const name = `bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const config = loadConfig({ DB_POOL_MAX: '20' });
  const logger = createLogger('silent');
  const pool = createPool(url.toString(), config, logger);
  const simulator = await startSimulator();
  try {
    await migrateToLatest(createDb(pool));
    const service = await compose({
      config: loadConfig({ PROCESSOR_URL: simulator.url, DB_POOL_MAX: '20', LOG_LEVEL: 'silent' }),
      pool,
      logger,
      supervise: false,
    });
    const server = service.app().listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as { port: number }).port;
    const { apiKey } = await createAccount(service.db, 'bench');
    const post = (key: string) =>
      fetch(`http://127.0.0.1:${port}/v1/charges`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'idempotency-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ amount: 1000, currency: 'usd', source: 'tok_visa' }),
      });
    const run = async (label: string, keyOf: (i: number) => string, expected: number) => {
      const times: number[] = [];
      let next = 0;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (next < total) {
            const i = next++;
            const t0 = performance.now();
            const res = await post(keyOf(i));
            await res.arrayBuffer();
            times.push(performance.now() - t0);
            if (res.status !== expected) throw new Error(`${label}: got ${res.status}`);
          }
        }),
      );
      const seconds = (performance.now() - started) / 1000;
      console.log(`${label}, ${total} requests at concurrency ${concurrency}: ${(total / seconds).toFixed(0)} req/s; ${summary(times)}`);
    };
    await run('new charges (2 transactions + 1 processor call each)', (i) => `new-${i}`, 201);
    await run('replays of stored answers', (i) => `new-${i}`, 201);
    server.close();
    await service.close();
  } finally {
    await pool.end();
    await simulator.close();
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  }
}

const dir = await mkdtemp(path.join(tmpdir(), 'payments-bench-'));
await chmod(dir, 0o755);
try {
  const envUrl = loadConfig().DATABASE_URL;
  const server = envUrl ? undefined : await startEmbeddedPostgres({ dir: path.join(dir, 'data'), port: 54399 });
  console.log(`node ${process.version}, Postgres at ${envUrl ? 'DATABASE_URL' : 'embedded'}`);
  await openCircuit();
  await charges(envUrl ?? server!.url, 1000, 20);
  await server?.stop();
} finally {
  await rm(dir, { recursive: true, force: true });
}
