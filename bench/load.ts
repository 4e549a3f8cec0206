// The load generator of `npm run bench`, in a process of its own so it never shares an event loop (or a
// core's time slice) with what it measures: node bench/load.ts '<LoadSpec as JSON>' prints one LoadOutput
// as JSON on stdout.
//
// Two drivers:
// - closed loop (no rate): autocannon; every connection sends its next request as soon as it has its answer.
//   That finds the saturating rate.
// - a fixed offered rate: by default paced here, one request every 1/rate seconds whatever the answers do
//   (an open loop: a late answer never delays the next request), on at most `connections` keep-alive sockets,
//   each latency timed from when the request was due, so waiting for a socket counts. autocannon's own
//   rate limiter (rateLimiter 'autocannon') is not an open loop: every connection sends its quota for the
//   second back to back when the second starts, then waits for the next one, so the load comes as one
//   burst of all connections every second; and the coordinated-omission correction it then applies assumes
//   a 1 ms interval between requests whatever the rate. It is kept for comparison only.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';

export interface LoadSpec {
  url: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
  connections: number;
  /** Seconds. */
  duration: number;
  /** Requests per second over all connections; unset, a closed loop (as fast as answers come). */
  overallRate?: number;
  /** How a fixed rate is offered (see above); 'paced' unless told. */
  rateLimiter?: 'paced' | 'autocannon';
  /** A new Idempotency-Key on every request. */
  freshKey: boolean;
  /** Every request carries this Idempotency-Key, and an answer without `Idempotent-Replayed: true` is counted. */
  replayKey?: string;
}

export interface LoadOutput {
  driver: 'autocannon' | 'paced' | 'autocannon-rate';
  /** Requests sent, including those still in flight when the run ended. */
  sent: number;
  /** Answers received (any status); requests still in flight at the end are not counted. */
  completed: number;
  seconds: number;
  /** autocannon's mean of its per-second counts; completed / seconds for the paced driver. */
  requestsPerSecond: number;
  /** Every answer's latency in ms (0.01 ms resolution), whatever its status, so copies can be merged. */
  latenciesMs: number[];
  statusCodes: Record<string, number>;
  /** Connection errors and timeouts: requests without an answer. */
  errors: number;
  /** Answers to a replay (LoadSpec.replayKey) that did not say Idempotent-Replayed: true. */
  notReplayed: number;
  /**
   * Paced driver: 99th percentile of how late a request left after it was due (ms). Its latencies include
   * that lateness, so a large one means the figures measure this process as much as the target.
   */
  sendLagP99Ms?: number;
  /** autocannon's own result, as it gave it (without its histograms' raw data). */
  autocannon?: Omit<autocannon.Result, 'latency' | 'throughput'> & { latency: unknown };
}

const round = (ms: number) => Math.round(ms * 100) / 100;

function headerOf(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const found = Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1];
  return Array.isArray(found) ? found[0] : found;
}

function requestHeaders(spec: LoadSpec): Record<string, string> {
  const headers = { ...spec.headers };
  if (spec.replayKey) headers['idempotency-key'] = spec.replayKey;
  if (spec.freshKey) headers['idempotency-key'] = randomUUID();
  return headers;
}

async function runAutocannon(spec: LoadSpec): Promise<LoadOutput> {
  let notReplayed = 0;
  const latenciesMs: number[] = [];
  const request: autocannon.Request = {
    ...(spec.freshKey ? { setupRequest: (req) => ({ ...req, headers: requestHeaders(spec) }) } : {}),
    ...(spec.replayKey
      ? {
          onResponse: (_status, _body, _context, headers) => {
            if (headerOf(headers ?? {}, 'idempotent-replayed') !== 'true') notReplayed += 1;
          },
        }
      : {}),
  };
  const options: autocannon.Options = {
    url: spec.url,
    method: spec.method,
    headers: requestHeaders({ ...spec, freshKey: false }),
    ...(spec.body === undefined ? {} : { body: spec.body }),
    connections: spec.connections,
    duration: spec.duration,
    ...(spec.overallRate ? { overallRate: spec.overallRate } : {}),
    requests: [request],
  };
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err, done) => (err ? reject(err) : resolve(done)));
    instance.on('response', (_client, _status, _bytes, ms) => latenciesMs.push(round(ms)));
  });
  const { throughput: _throughput, ...kept } = result;
  return {
    driver: spec.overallRate ? 'autocannon-rate' : 'autocannon',
    sent: result.requests.sent,
    completed: result.requests.total,
    seconds: result.duration,
    requestsPerSecond: result.requests.mean,
    latenciesMs,
    statusCodes: Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, s]) => [code, s.count ?? 0])),
    errors: result.errors,
    notReplayed,
    autocannon: kept,
  };
}

/** One request on the agent's sockets; resolves with its status and whether it said it was a replay. */
function send(agent: http.Agent, url: URL, spec: LoadSpec): Promise<{ status: number; replayed: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent, method: spec.method, headers: requestHeaders(spec), timeout: 30_000 }, (res) => {
      res.resume();
      res.once('end', () => resolve({ status: res.statusCode ?? 0, replayed: res.headers['idempotent-replayed'] === 'true' }));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
    req.end(spec.body);
  });
}

async function runPaced(spec: LoadSpec): Promise<LoadOutput> {
  const rate = spec.overallRate!;
  const url = new URL(spec.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.connections });
  const latenciesMs: number[] = [];
  const lagsMs: number[] = [];
  const statusCodes: Record<string, number> = {};
  const inFlight = new Set<Promise<void>>();
  let errors = 0;
  let notReplayed = 0;

  const fire = (dueAt: number) => {
    lagsMs.push(performance.now() - dueAt);
    const done = send(agent, url, spec).then(
      ({ status, replayed }) => {
        latenciesMs.push(round(performance.now() - dueAt));
        statusCodes[status] = (statusCodes[status] ?? 0) + 1;
        if (spec.replayKey && !replayed) notReplayed += 1;
      },
      () => {
        errors += 1;
      },
    );
    inFlight.add(done);
    void done.finally(() => inFlight.delete(done));
  };

  const started = performance.now();
  const dueAt = (i: number) => started + (i * 1000) / rate;
  const total = Math.floor(rate * spec.duration);
  let next = 0;
  while (next < total) {
    // Every request due by now goes out now, each timed from when it was due.
    while (next < total && dueAt(next) <= performance.now()) fire(dueAt(next++));
    if (next < total) await sleep(Math.max(0, dueAt(next) - performance.now()));
  }
  await Promise.all(inFlight);
  agent.destroy();
  const seconds = (performance.now() - started) / 1000;
  return {
    driver: 'paced',
    sent: total,
    completed: latenciesMs.length,
    seconds,
    requestsPerSecond: latenciesMs.length / seconds,
    latenciesMs,
    statusCodes,
    errors,
    notReplayed,
    sendLagP99Ms: round(lagsMs.sort((a, b) => a - b)[Math.floor(lagsMs.length * 0.99)] ?? 0),
  };
}

export function runLoad(spec: LoadSpec): Promise<LoadOutput> {
  return spec.overallRate && spec.rateLimiter !== 'autocannon' ? runPaced(spec) : runAutocannon(spec);
}

const spec = JSON.parse(process.argv[2] ?? 'null') as LoadSpec | null;
if (!spec?.url) {
  process.stderr.write('usage: node bench/load.ts \'{"url": ..., "method": ..., "connections": ..., "duration": ...}\'\n');
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(await runLoad(spec))}\n`);
