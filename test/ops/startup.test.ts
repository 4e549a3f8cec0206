// Start-up before the database: api and worker started while their Postgres is down wait for it, alive
// and not ready, and start when it comes; a database that will never do (it does not exist) is one line
// and exit 1. Real processes against a cluster this file owns.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '../helpers/cluster.ts';
import { freePort } from '../helpers/ports.ts';
import { httpRequest, type ServiceProcess, startService, stopAllServices } from '../helpers/processes.ts';

let cluster: TestCluster;
let databaseUrl: string;
beforeAll(async () => {
  cluster = await startTestCluster();
  databaseUrl = await cluster.createDatabase();
});
afterAll(async () => {
  await stopAllServices();
  await cluster?.destroy();
});

const status = (url: string) =>
  httpRequest('GET', url, { timeoutMs: 2000 }).then(
    (r) => r.status,
    () => 0,
  );
const said = (s: ServiceProcess, msg: string) => s.lines.filter((l) => l.msg === msg).length;
const WAITING = 'waiting for the database: /livez answers 200, /readyz 503 meanwhile';

describe('start-up', () => {
  it('api and worker started while Postgres is down: alive, not ready, one line each, and they start when it is back', async () => {
    await cluster.stop('fast');
    const [apiPort, workerPort] = [await freePort(), await freePort()];
    const env = { DATABASE_URL: databaseUrl, PROCESSOR_URL: 'http://127.0.0.1:9', LOG_LEVEL: 'info' };
    const api = startService('api', { ...env, PORT: String(apiPort) });
    const worker = startService('worker', { ...env, WORKER_METRICS_PORT: String(workerPort) });
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    const workerUrl = `http://127.0.0.1:${workerPort}`;

    await expect.poll(() => said(api, WAITING) + said(worker, WAITING), { timeout: 30_000, interval: 100 }).toBe(2);
    expect(await status(`${apiUrl}/livez`)).toBe(200);
    expect(await status(`${apiUrl}/readyz`)).toBe(503);
    const charge = await httpRequest('POST', `${apiUrl}/v1/charges`, { headers: { 'idempotency-key': 'k' }, body: {} });
    expect(charge.status).toBe(503);
    expect(charge.body.code).toBe('database_unavailable');
    expect(await status(`${workerUrl}/livez`)).toBe(200);

    await cluster.start();
    await expect.poll(() => status(`${apiUrl}/readyz`), { timeout: 30_000, interval: 100 }).toBe(200);
    await expect.poll(() => worker.lines.filter((l) => /^worker started/.test(String(l.msg))).length, { timeout: 30_000, interval: 100 }).toBe(1);
    expect(await status(`${workerUrl}/metrics`)).toBe(200);
    for (const s of [api, worker]) {
      expect(s.alive(), s.describe()).toBe(true);
      expect(said(s, WAITING), `${s.role}: waiting lines`).toBe(1);
      expect(said(s, 'database ready: starting'), `${s.role}: ready lines`).toBe(1);
    }
    await Promise.all([api.stop(), worker.stop()]);
  }, 120_000);

  it('a database that does not exist: one line naming it, exit 1, no stack trace', async () => {
    const missing = new URL(databaseUrl);
    missing.pathname = '/no_such_database';
    const api = startService('api', { DATABASE_URL: missing.toString(), PORT: String(await freePort()) });
    const exit = await api.exited;
    expect(exit.code).toBe(1);
    const lines = api.stderr.trim().split('\n');
    expect(lines, api.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/cannot use the database: no such database .*DATABASE_URL/);
  }, 60_000);
});
