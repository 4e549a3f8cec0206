// `npm start` runs the processor simulator in its own process: PROCESSOR_PORT alone moves it, and the
// service must follow it there, not keep calling the default address (every charge would go pending).
import { afterAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { freePort } from '../helpers/ports.ts';
import { type ServiceProcess, startService } from '../helpers/processes.ts';

let t: TestDatabase | undefined;
let service: ServiceProcess | undefined;
afterAll(async () => {
  await service?.stop();
  await t?.destroy();
});

it('charges through the simulator on PROCESSOR_PORT when PROCESSOR_URL is not set', async () => {
  t = await createTestDatabase();
  const [port, processorPort] = [await freePort(), await freePort()];
  service = startService('all', {
    DATABASE_URL: t.url,
    PORT: String(port),
    PROCESSOR_PORT: String(processorPort),
    PROCESSOR_URL: '',
    PROCESSOR_MAX_ATTEMPTS: '1',
  });
  const base = `http://127.0.0.1:${port}`;
  const up = async () => (await fetch(`${base}/livez`).catch(() => undefined))?.status;
  await expect.poll(up, { timeout: 20_000, interval: 100 }).toBe(200);
  // The first start greets with the demo account's key.
  await expect.poll(() => /sk_test_[A-Za-z0-9_-]+/.exec(service!.stdout)?.[0], { timeout: 5000 }).toBeDefined();
  const apiKey = /sk_test_[A-Za-z0-9_-]+/.exec(service.stdout)![0];

  const res = await fetch(`${base}/v1/charges`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'idempotency-key': 'k-1', 'content-type': 'application/json' },
    body: JSON.stringify({ amount: 1000, currency: 'usd', source: 'tok_visa' }),
  });
  expect(res.status, service.describe()).toBe(201);
  expect(await res.json()).toMatchObject({ status: 'succeeded', processor_reference: expect.stringMatching(/^pr_/) });
  expect(service.lines.find((l) => l.msg === 'processor simulator listening')).toMatchObject({
    url: `http://127.0.0.1:${processorPort}`,
  });
});
