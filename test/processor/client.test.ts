// The processor client against a processor that starts its answer and never ends it: the attempt must
// still end (by its timeout, or when the connection goes), as "unavailable", never as an answer and never
// by hanging. The simulator answers whole or not at all, so a real HTTP server here cuts the body short.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { type ChargeRequest, createProcessorClient, type ProcessorClient } from '../../src/processor/processor.client.ts';

const ATTEMPT_TIMEOUT_MS = 500;
let server: http.Server | undefined;
let client: ProcessorClient | undefined;

afterEach(async () => {
  client?.shutdown();
  server?.closeAllConnections();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = client = undefined;
});

/** A processor that sends its status and half a JSON body, then does `then` with the connection. */
async function halfAnswering(then: 'stall' | 'hang up'): Promise<ProcessorClient> {
  server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('{"id":"pr_half","status":"succ');
    if (then === 'hang up') setTimeout(() => res.socket?.destroy(), 50);
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const settings = loadConfig({ PROCESSOR_URL: url, PROCESSOR_MAX_ATTEMPTS: '1', PROCESSOR_ATTEMPT_TIMEOUT_MS: String(ATTEMPT_TIMEOUT_MS) });
  client = createProcessorClient(settings, createLogger('silent'));
  return client;
}

const charge: ChargeRequest = { amount: 1000, currency: 'usd', source: 'tok_visa', description: null };

describe('a processor that stops in the middle of its answer', () => {
  it('is a timed-out attempt when it stalls: unavailable, not an answer, at the attempt timeout', async () => {
    const processor = await halfAnswering('stall');
    const outcome = await processor.send('charge', charge, 'charge_half_stall', Date.now() + 20 * ATTEMPT_TIMEOUT_MS);
    expect(outcome).toMatchObject({ kind: 'unavailable', reason: 'timeout' });
  });

  it('is a failed attempt when it hangs up: unavailable, not an answer, without waiting for the timeout', async () => {
    const processor = await halfAnswering('hang up');
    const outcome = await processor.send('charge', charge, 'charge_half_hangup', Date.now() + 20 * ATTEMPT_TIMEOUT_MS);
    expect(outcome).toMatchObject({ kind: 'unavailable', reason: 'error' });
  });
});
