// The worker serves no API, but Prometheus must reach it: its jobs, dead letters and sweeps are counted
// there and nowhere else when api and worker run apart.
import { afterAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { freePort } from '../helpers/ports.ts';
import { type ServiceProcess, startService } from '../helpers/processes.ts';

let t: TestDatabase | undefined;
let worker: ServiceProcess | undefined;
afterAll(async () => {
  await worker?.stop();
  await t?.destroy();
});

it('answers /livez and /metrics on WORKER_METRICS_PORT, a 404 problem for anything else, and stops with it', async () => {
  t = await createTestDatabase();
  const port = await freePort();
  worker = startService('worker', { DATABASE_URL: t.url, WORKER_METRICS_PORT: String(port), PROCESSOR_URL: 'http://127.0.0.1:9' });
  const base = `http://127.0.0.1:${port}`;
  const live = async () => (await fetch(`${base}/livez`).catch(() => undefined))?.status;
  await expect.poll(live, { timeout: 20_000, interval: 100 }).toBe(200);
  // Alive from the start; its metrics once it has started (its database answered).
  await expect.poll(() => worker!.lines.some((l) => l.msg === 'worker metrics listening'), { timeout: 20_000, interval: 100 }).toBe(true);

  const metrics = await fetch(`${base}/metrics`);
  expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
  const text = await metrics.text();
  for (const name of ['settle_jobs_total', 'settle_dead_letters_total', 'sweep_redriven_total', 'settle_queue_backlog']) {
    expect(text).toContain(`# TYPE ${name} `);
  }

  const other = await fetch(`${base}/v1/charges`);
  expect(other.status).toBe(404);
  expect(other.headers.get('content-type')).toBe('application/problem+json');
  expect(await other.json()).toMatchObject({ status: 404, code: 'not_found' });

  expect(await worker.stop()).toEqual({ code: 0, signal: null });
  expect(await live()).toBeUndefined();
});
