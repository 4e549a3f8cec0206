// What is sent and how: one load process (bench/load.ts) per copy of the target, their results merged.
import type { LoadOutput, LoadSpec } from '../load.ts';
import { runOrThrow } from './processes.ts';

export interface Workload {
  name: string;
  method: 'GET' | 'POST';
  path: string;
  body?: string;
  freshKey: boolean;
  replayKey?: string;
  expectedStatus: number;
}

export interface Measurement {
  requestsPerSecond: number;
  /** Requests sent, those in flight when the run ended included. */
  sent: number;
  /** Answers received. */
  completed: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  statusCodes: Record<string, number>;
  errors: number;
  notReplayed: number;
  /** Paced load only: how late requests left, 99th percentile, worst copy (see LoadOutput.sendLagP99Ms). */
  sendLagP99Ms?: number;
  /** Anything but the expected answer, in words; undefined when every answer was the expected one. */
  unexpected: string | undefined;
}

export const CHARGE_BODY = JSON.stringify({ amount: 1000, currency: 'usd', source: 'tok_visa' });

/** `total` split into `parts` whole numbers as even as can be (the first ones take the remainder). */
export function split(total: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function runLoadProcess(spec: LoadSpec): Promise<LoadOutput> {
  const stdout = await runOrThrow(process.execPath, ['bench/load.ts', JSON.stringify(spec)]);
  return JSON.parse(stdout) as LoadOutput;
}

function describeUnexpected(workload: Workload, m: Omit<Measurement, 'unexpected'>): string | undefined {
  const other = Object.entries(m.statusCodes).filter(([code]) => Number(code) !== workload.expectedStatus);
  const parts = [
    ...other.map(([code, count]) => `${count}× ${code}`),
    ...(m.errors ? [`${m.errors} without an answer`] : []),
    ...(m.notReplayed ? [`${m.notReplayed} not marked Idempotent-Replayed`] : []),
  ];
  return parts.length ? `${workload.name}: ${parts.join(', ')} (expected ${workload.expectedStatus})` : undefined;
}

function merge(workload: Workload, outputs: LoadOutput[]): Measurement {
  const latencies = outputs.flatMap((o) => o.latenciesMs).sort((a, b) => a - b);
  const statusCodes: Record<string, number> = {};
  for (const o of outputs) for (const [code, n] of Object.entries(o.statusCodes)) statusCodes[code] = (statusCodes[code] ?? 0) + n;
  const sum = (pick: (o: LoadOutput) => number) => outputs.reduce((total, o) => total + pick(o), 0);
  const measured = {
    requestsPerSecond: sum((o) => o.requestsPerSecond),
    sent: sum((o) => o.sent),
    completed: sum((o) => o.completed),
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.at(-1) ?? Number.NaN,
    statusCodes,
    errors: sum((o) => o.errors),
    notReplayed: sum((o) => o.notReplayed),
    ...(outputs.some((o) => o.sendLagP99Ms !== undefined)
      ? { sendLagP99Ms: Math.max(...outputs.map((o) => o.sendLagP99Ms ?? 0)) }
      : {}),
  };
  return { ...measured, unexpected: describeUnexpected(workload, measured) };
}

/**
 * Runs `workload` against every base URL at once, one load process each, `connections` split among them;
 * with `rate`, that many requests per second in all are offered (split the same way), else a closed loop.
 */
export async function measure(
  workload: Workload,
  options: {
    baseUrls: string[];
    headers: Record<string, string>;
    connections: number;
    seconds: number;
    rate?: number;
    rateLimiter?: LoadSpec['rateLimiter'];
  },
): Promise<Measurement> {
  const copies = options.baseUrls.length;
  const connections = split(options.connections, copies);
  const rates = options.rate === undefined ? undefined : split(options.rate, copies);
  const outputs = await Promise.all(
    options.baseUrls.map((base, i) =>
      runLoadProcess({
        url: `${base}${workload.path}`,
        method: workload.method,
        headers: { ...options.headers, ...(workload.body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(workload.body === undefined ? {} : { body: workload.body }),
        connections: Math.max(1, connections[i]!),
        duration: options.seconds,
        ...(rates ? { overallRate: Math.max(1, rates[i]!), rateLimiter: options.rateLimiter ?? 'paced' } : {}),
        freshKey: workload.freshKey,
        ...(workload.replayKey ? { replayKey: workload.replayKey } : {}),
      }),
    ),
  );
  return merge(workload, outputs);
}
