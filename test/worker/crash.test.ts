// A real crash: the api is a child process, killed with SIGKILL while a charge is in flight at the
// processor; fresh processes, the client's retries and the completer then finish it exactly once.
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningSimulator, startSimulator } from '../../src/simulator/simulator.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { makeAccount } from '../helpers/factories.ts';
import { auditLogLine } from '../helpers/log-audit.ts';
import { freePort } from '../helpers/ports.ts';

let t: TestDatabase;
let simulator: RunningSimulator;
const children: ChildProcess[] = [];
const report: string[] = [];
const say = (line: string) => report.push(line);

function startProcess(role: 'api' | 'worker', env: Record<string, string>) {
  const child = spawn(process.execPath, ['src/main.ts', role], {
    env: { ...process.env, WORKER_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Record<string, unknown>[] = [];
  child.stdout!.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n')) {
      if (!line.startsWith('{')) continue;
      auditLogLine(line);
      lines.push(JSON.parse(line));
    }
  });
  children.push(child);
  return { child, lines };
}

async function waitReady(url: string) {
  await expect
    .poll(async () => (await request(url).get('/readyz').catch(() => ({ status: 0 }))).status, {
      timeout: 30_000,
      interval: 100,
    })
    .toBe(200);
}

beforeAll(async () => {
  t = await createTestDatabase();
  simulator = await startSimulator();
});
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL');
  await simulator.close();
  await t.destroy();
  if (report.length) process.stdout.write(`\ncrash test:\n${report.map((l) => `  ${l}`).join('\n')}\n`);
});

describe('a crash mid-request', () => {
  it('ends with the charge settled exactly once, and the client told what was stored', async () => {
    const { account, auth } = await makeAccount(t.db);
    const key = `crash-${Date.now()}`;
    const port = await freePort();
    const env = {
      DATABASE_URL: t.url,
      PROCESSOR_URL: simulator.url,
      PORT: String(port),
      LOG_LEVEL: 'info',
      IDEMPOTENCY_LEASE_SECONDS: '2',
      REQUEST_TIMEOUT_MS: '10000',
      PROCESSOR_ATTEMPT_TIMEOUT_MS: '8000',
      COMPLETER_INTERVAL_SECONDS: '1',
      JOB_POLL_INTERVAL_SECONDS: '0.5',
    };
    const url = `http://127.0.0.1:${port}`;
    const body = { amount: 4200, currency: 'usd', source: 'tok_visa', description: 'crash test' };
    const post = () => request(url).post('/v1/charges').set(auth).set('Idempotency-Key', key).send(body);

    const first = startProcess('api', env);
    await waitReady(url);
    await request(simulator.url).put('/chaos').send({ mode: 'slow', latency_ms: 1500, jitter_ms: 0 });

    const inFlight = post().then(
      (r) => `answered ${r.status}`,
      (err: Error) => `connection lost (${err.message})`,
    );
    await expect.poll(() => simulator.state.requests.charges, { timeout: 10_000, interval: 10 }).toBe(1);
    first.child.kill('SIGKILL');
    say(`api pid ${first.child.pid} killed with SIGKILL while the processor was handling the charge`);
    say(`client's first request: ${await inFlight}`);

    const keyRow = await t.db
      .selectFrom('idempotency_keys')
      .selectAll()
      .where('account_id', '=', account.id)
      .where('key', '=', key)
      .executeTakeFirstOrThrow();
    const pendingCharge = await t.db
      .selectFrom('charges')
      .selectAll()
      .where('idempotency_key_id', '=', keyRow.id)
      .executeTakeFirstOrThrow();
    expect(keyRow.recovery_point).toBe('intent_recorded');
    expect(pendingCharge.status).toBe('pending');
    say(`left behind: key at ${keyRow.recovery_point}, charge ${pendingCharge.id} ${pendingCharge.status}`);

    // The processor finishes its work and charges the card; its answer goes to a dead socket.
    await expect.poll(() => simulator.state.ledger.length, { timeout: 10_000, interval: 50 }).toBe(1);
    say(`processor ledger after the crash: ${simulator.state.ledger.length} charge (${simulator.state.ledger[0]!.id})`);
    await request(simulator.url).put('/chaos').send({ mode: 'healthy' });

    const api = startProcess('api', env);
    const worker = startProcess('worker', env);
    await waitReady(url);
    let final: request.Response | undefined;
    const statuses: number[] = [];
    for (let i = 0; i < 100 && !final; i += 1) {
      const res = await post();
      statuses.push(res.status);
      if (res.status !== 409) final = res;
      else await new Promise((r) => setTimeout(r, 200));
    }
    say(`client retries with the same key answered: ${statuses.join(', ')}`);
    expect(final?.status).toBe(201);
    expect(final!.body.id).toBe(pendingCharge.id);

    const stored = await t.db
      .selectFrom('idempotency_keys')
      .selectAll()
      .where('id', '=', keyRow.id)
      .executeTakeFirstOrThrow();
    expect(stored.recovery_point).toBe('finished');
    expect(stored.response_status).toBe(final!.status);
    expect(stored.response_body).toEqual(final!.body);

    const charges = await t.db.selectFrom('charges').selectAll().where('account_id', '=', account.id).execute();
    expect(charges).toHaveLength(1);
    expect(charges[0]).toMatchObject({ status: 'succeeded', processor_reference: simulator.state.ledger[0]!.id });
    const entries = simulator.state.ledger.filter((e) => e.idempotency_key === pendingCharge.processor_idempotency_key);
    expect(entries).toHaveLength(1);
    expect(simulator.state.ledger).toHaveLength(1);

    // Who finished it says so in a log line, which may reach us a moment after the answer did.
    const finishedBy = () => ({
      completed: worker.lines.some((l) => l.msg === 'completer finished an abandoned request'),
      resumed: api.lines.some((l) => l.msg === 'request completed' && l.idempotency === 'resumed'),
    });
    await expect.poll(() => finishedBy().completed || finishedBy().resumed, { timeout: 5000, interval: 20 }).toBe(true);
    const { completed, resumed } = finishedBy();
    say(
      `finished by: ${completed ? 'the completer' : ''}${completed && resumed ? ' and ' : ''}${resumed ? "the client's retry (resumed)" : ''}; ` +
        `final answer ${final!.status}${final!.headers['idempotent-replayed'] ? ' (replayed)' : ''} for ${final!.body.id}`,
    );
    say(`charges rows: ${charges.length}, processor ledger entries: ${simulator.state.ledger.length}, processor charge requests: ${simulator.state.requests.charges}`);
  });
});

describe('the api process', () => {
  it('answers requests its HTTP parser refuses with problem+json, not bare text', async () => {
    const port = await freePort();
    startProcess('api', { DATABASE_URL: t.url, PROCESSOR_URL: simulator.url, PORT: String(port) });
    await waitReady(`http://127.0.0.1:${port}`);
    const send = (raw: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1', () => socket.write(raw));
        let text = '';
        socket.on('data', (chunk) => {
          text += chunk.toString();
        });
        socket.on('end', () => resolve(text));
        socket.on('error', reject);
      });
    const cases: [string, number, string][] = [
      ['NOT HTTP AT ALL\r\n\r\n', 400, 'bad_request'],
      [`GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'headers_too_large'],
      ['GET /livez HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nConnection: close\r\n\r\n', 417, 'expectation_failed'],
    ];
    for (const [raw, status, code] of cases) {
      const answer = await send(raw);
      expect(answer).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(answer).toContain('Content-Type: application/problem+json');
      expect(answer).toContain('X-Content-Type-Options: nosniff');
      const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4));
      expect(body).toMatchObject({ status, code, request_id: expect.stringMatching(/^req_/) });
      expect(answer).toContain(`X-Request-Id: ${body.request_id}`);
    }
    // A HEAD gets the headers alone: a body would be read as the start of the next answer.
    const head = await send(`HEAD /livez HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\u0000b\r\n\r\n`);
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head.endsWith('\r\n\r\n')).toBe(true);
    // Nothing here routes by Host, so a request without one is served rather than refused.
    expect(await send('GET /livez HTTP/1.1\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
  });
});
