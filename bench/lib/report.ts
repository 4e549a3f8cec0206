// What a run found, as bench/results.json holds it, and the table and verdicts printed from it.
import type { StatementStats } from './database.ts';
import type { Measurement } from './workloads.ts';

export interface Machine {
  cpus: number;
  cpuModel: string;
  totalMemoryGb: number;
  node: string;
  postgres: string;
  platform: string;
}

export interface Settings {
  durationSeconds: number;
  quick: boolean;
  copies: number;
  /** --env overrides given to every api process. */
  env: Record<string, string>;
  warmupSeconds: number;
  saturationConnections: number;
  halfRateConnections: number;
  rateLimiter: 'paced' | 'autocannon';
  skipPgbench: boolean;
}

export interface Row {
  saturation: Measurement;
  halfRate?: Measurement;
  /** Requests per second offered in the half-rate run. */
  halfRateOffered?: number;
  /** Statements the database received per request, during the saturation run. */
  statementsPerRequest?: number;
  /**
   * CPU milliseconds per request during the saturation run: the api processes', and the Postgres server's
   * (every backend and background process of the bench's own cluster). Steadier than throughput on a
   * shared machine: other load slows a request down, but hardly changes what it costs.
   */
  cpuMsPerRequest?: { api: number; postgres: number };
}

export interface DbCeiling {
  skipped?: string;
  transactionsPerSecond?: number;
  transactions?: number;
  latencyAverageMs?: number | undefined;
  statementsPerTransaction?: number;
  /** The statements pgbench sent, most called first, per transaction. */
  statements?: (StatementStats & { perRequest: number })[];
  script: string;
}

export interface Ratio {
  name: string;
  value: number | undefined;
  display: string;
  target: string;
  pass: boolean | undefined;
}

export interface Results {
  date: string;
  machine: Machine;
  settings: Settings;
  httpCeiling: Row;
  dbCeiling: DbCeiling;
  workloads: Record<WorkloadName, Row>;
  /** The same workloads on the reference service (bench/reference-server.ts), in the same run. */
  reference: Record<WorkloadName, Row>;
  /** What one new charge sends, most called first: calls per request and mean execution time. */
  newChargeStatements: (StatementStats & { perRequest: number })[];
  protections: { env: Record<string, string>; on: number; off: number; onRuns: number[]; offRuns: number[]; cost: number };
  /** How each api copy was started: `node <flags> src/main.ts api`, the flags package.json's start:api has. */
  apiCommand: string;
  /** Per api copy: VmHWM after the workloads. */
  apiPeakRssMb: number[];
  /** Per api copy: VmHWM once it answered /livez, before any load. */
  apiRssAtStartMb: number[];
  ratios: Ratio[];
  warnings: string[];
}

export const WORKLOAD_NAMES = ['new charges', 'replays', 'get', 'list'] as const;
export type WorkloadName = (typeof WORKLOAD_NAMES)[number];

/** A paced run whose requests left later than this (p99, ms) measured its own load generator too. */
export const SEND_LAG_LIMIT_MS = 2;

const ms = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '—' : v < 10 ? v.toFixed(2) : v.toFixed(1));
const perSecond = (v: number | undefined) => (v === undefined ? '—' : Math.round(v).toString());
const mb = (values: number[]) => values.map((v) => `${v.toFixed(0)} MB`).join(', ');
const percent = (v: number) => `${(v * 100).toFixed(1)} %`;
const times = (v: number) => `${v.toFixed(2)} ×`;

function verdict(name: string, value: number | undefined, target: string, pass: (v: number) => boolean, show: (v: number) => string): Ratio {
  return value === undefined || Number.isNaN(value)
    ? { name, value: undefined, display: 'n/a', target, pass: undefined }
    : { name, value, display: show(value), target, pass: pass(value) };
}

const cpuTotal = (row: Row) => (row.cpuMsPerRequest ? row.cpuMsPerRequest.api + row.cpuMsPerRequest.postgres : undefined);

export function ratios(r: Omit<Results, 'ratios'>): Ratio[] {
  const newCharges = r.workloads['new charges'];
  const http = r.httpCeiling.saturation.requestsPerSecond;
  return [
    verdict('new charges ÷ HTTP ceiling', newCharges.saturation.requestsPerSecond / http, '≥ 9 %', (v) => v >= 0.09, percent),
    verdict(
      'new charges ÷ DB ceiling',
      r.dbCeiling.transactionsPerSecond && newCharges.saturation.requestsPerSecond / r.dbCeiling.transactionsPerSecond,
      '≥ 60 %',
      (v) => v >= 0.6,
      percent,
    ),
    verdict('replays ÷ HTTP ceiling', r.workloads.replays.saturation.requestsPerSecond / http, '≥ 27 %', (v) => v >= 0.27, percent),
    verdict('new charges p99 at half saturation', newCharges.halfRate?.p99Ms, '≤ 25 ms', (v) => v <= 25, (v) => `${ms(v)} ms`),
    verdict(
      'new charges ÷ reference service',
      newCharges.saturation.requestsPerSecond / r.reference['new charges'].saturation.requestsPerSecond,
      '≥ 1.0 ×',
      (v) => v >= 1,
      times,
    ),
    verdict(
      'replays ÷ reference service',
      r.workloads.replays.saturation.requestsPerSecond / r.reference.replays.saturation.requestsPerSecond,
      '≥ 1.3 ×',
      (v) => v >= 1.3,
      times,
    ),
    verdict('machine CPU per new charge (api + Postgres)', cpuTotal(newCharges), '≤ 4.0 ms', (v) => v <= 4, (v) => `${v.toFixed(2)} ms`),
    verdict('machine CPU per replay (api + Postgres)', cpuTotal(r.workloads.replays), '≤ 0.8 ms', (v) => v <= 0.8, (v) => `${v.toFixed(2)} ms`),
    verdict('api peak RSS', Math.max(...r.apiPeakRssMb), '≤ 150 MB', (v) => v <= 150, (v) => `${v.toFixed(0)} MB`),
    verdict('protections cost (1 − on/off)', r.protections.cost, '≤ 5 %', (v) => v <= 0.05, percent),
  ];
}

function tableRow(name: string, row: Row | undefined, db?: DbCeiling): string {
  if (db) {
    const figure = db.skipped ? `skipped (${db.skipped})` : perSecond(db.transactionsPerSecond);
    const statements = db.statementsPerTransaction?.toFixed(2) ?? '—';
    return `| ${name} | ${figure} | — | — | — | — | ${statements} | — |`;
  }
  const s = row!.saturation;
  const h = row!.halfRate;
  const flag = s.unexpected || h?.unexpected ? ' ⚠' : '';
  const late = (h?.sendLagP99Ms ?? 0) > SEND_LAG_LIMIT_MS ? ' *' : '';
  const statements = row!.statementsPerRequest?.toFixed(2) ?? '—';
  const c = row!.cpuMsPerRequest;
  const cpu = c ? `${c.api.toFixed(2)} + ${c.postgres.toFixed(2)} = ${(c.api + c.postgres).toFixed(2)}` : '—';
  return `| ${name}${flag} | ${perSecond(s.requestsPerSecond)} | ${ms(s.p50Ms)} | ${ms(s.p99Ms)} | ${ms(h?.p50Ms)}${late} | ${ms(h?.p99Ms)}${late} | ${statements} | ${cpu} |`;
}

function footnotes(r: Results): string[] {
  const rows = [r.httpCeiling, ...WORKLOAD_NAMES.flatMap((name) => [r.workloads[name], r.reference[name]])];
  const late = rows.some((row) => (row.halfRate?.sendLagP99Ms ?? 0) > SEND_LAG_LIMIT_MS);
  const odd = rows.some((row) => row.saturation.unexpected || row.halfRate?.unexpected);
  return [
    ...(late ? [`* the load generator sent late (p99 over ${SEND_LAG_LIMIT_MS} ms): that latency is partly its own`] : []),
    ...(odd ? ['⚠ answers other than the expected ones: see the warnings'] : []),
  ];
}

export function renderReport(r: Results): string {
  const { machine: m, settings: s } = r;
  const lines = [
    `machine: ${m.cpus} × ${m.cpuModel}, ${m.totalMemoryGb.toFixed(1)} GB, ${m.platform}; node ${m.node}; Postgres ${m.postgres}`,
    `settings: ${s.durationSeconds} s per run, ${s.copies} api cop${s.copies === 1 ? 'y' : 'ies'}, ${s.saturationConnections} connections at saturation, ` +
      `${s.halfRateConnections} at half rate (${s.rateLimiter}), warm-up ${s.warmupSeconds} s` +
      (Object.keys(s.env).length ? `, env ${Object.entries(s.env).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''),
    '',
    `| | req/s at ${s.saturationConnections} connections | p50 ms | p99 ms | p50 ms at half rate | p99 ms at half rate | statements per request | CPU ms per request: api + Postgres |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    tableRow('HTTP ceiling', r.httpCeiling),
    tableRow('DB ceiling (pgbench charges/s)', undefined, r.dbCeiling),
    ...WORKLOAD_NAMES.map((name) => tableRow(name, r.workloads[name])),
    ...WORKLOAD_NAMES.map((name) => tableRow(`reference service: ${name}`, r.reference[name])),
    ...footnotes(r),
    '',
    '| | measured | target | |',
    '|---|---:|---:|---|',
    ...r.ratios.map((x) => `| ${x.name} | ${x.display} | ${x.target} | ${x.pass === undefined ? '—' : x.pass ? 'PASS' : 'MISS'} |`),
    '',
    `protections: median ${perSecond(r.protections.on)} req/s on (${r.protections.onRuns.map(perSecond).join(', ')}), ` +
      `${perSecond(r.protections.off)} req/s off (${r.protections.offRuns.map(perSecond).join(', ')}) ` +
      `(${Object.entries(r.protections.env).map(([k, v]) => `${k}=${v}`).join(' ')})`,
    `api peak RSS: ${mb(r.apiPeakRssMb)} (${mb(r.apiRssAtStartMb)} when it started answering), started as \`${r.apiCommand}\` with a filled compile cache`,
    '',
    'statements one new charge sends (calls per request, mean ms):',
    ...r.newChargeStatements.map((x) => `  ${x.perRequest.toFixed(2)}  ${x.meanMs.toFixed(3)}  ${x.query.replace(/\s+/g, ' ').slice(0, 150)}`),
  ];
  if (r.warnings.length) lines.push('', 'warnings:', ...r.warnings.map((w) => `  ${w}`));
  return lines.join('\n');
}
