// What /readyz asks: can this process do its work right now?
import { databaseState, type Db, ping } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { Backlog } from '../metrics.ts';

// What an unauthenticated caller may learn: a stable code per check. Hosts, roles and driver messages
// go to the log only.
export type CheckCode = 'shutting_down' | 'database_unreachable' | 'database_read_only' | 'schema_not_migrated' | 'migrations_pending';

export interface ReadinessResult {
  ready: boolean;
  checks: Record<string, { status: 'pass' | 'fail'; code?: CheckCode }>;
}

const brief = (err: unknown) => ({ code: (err as { code?: string }).code, reason: (err as Error).message });

export async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function createReadiness(deps: { db: Db; logger: Logger; timeoutMs: number; isShuttingDown: () => boolean }) {
  return async function readiness(): Promise<ReadinessResult> {
    if (deps.isShuttingDown()) {
      return { ready: false, checks: { shutdown: { status: 'fail', code: 'shutting_down' } } };
    }
    try {
      const { missing, readOnly } = await withTimeout(databaseState(deps.db), deps.timeoutMs, 'the database');
      if (readOnly) {
        deps.logger.warn({ check: 'database_read_only' }, 'not ready');
        return { ready: false, checks: { database: { status: 'fail', code: 'database_read_only' } } };
      }
      if (missing.length) deps.logger.warn({ missing }, 'not ready: migrations pending');
      const migrations = missing.length
        ? { status: 'fail' as const, code: 'migrations_pending' as const }
        : { status: 'pass' as const };
      return { ready: missing.length === 0, checks: { database: { status: 'pass' }, migrations } };
    } catch (err) {
      const code = /kysely_migration/.test(String(err)) ? 'schema_not_migrated' : 'database_unreachable';
      deps.logger.warn({ check: code, ...brief(err) }, 'not ready');
      return { ready: false, checks: { database: { status: 'fail', code } } };
    }
  };
}

export type Readiness = ReturnType<typeof createReadiness>;

export interface HealthCheck {
  componentType?: string;
  observedValue: number | string;
  observedUnit?: string;
  status: 'pass' | 'warn' | 'fail';
  time: string;
  output?: string;
}

export interface HealthReport {
  status: 'pass' | 'warn' | 'fail';
  checks: Record<string, HealthCheck[]>;
}

// Health is read by monitors every few seconds; one answer serves all of them for this long.
const HEALTH_CACHE_MS = 1000;
// A settle backlog past this many jobs is worth a look, not an outage.
const BACKLOG_WARN = 1000;

const worst = (statuses: HealthCheck['status'][]) =>
  statuses.includes('fail') ? 'fail' : statuses.includes('warn') ? 'warn' : 'pass';

/** The deep health report (IETF health+json): database, processor circuit, job queue. Cached briefly. */
export function createHealth(deps: {
  db: Db;
  logger: Logger;
  timeoutMs: number;
  breakerState: () => string;
  backlog: () => Promise<Backlog>;
}) {
  let cached: { at: number; report: Promise<HealthReport> } | undefined;

  async function measure(): Promise<HealthReport> {
    const time = new Date().toISOString();
    const started = performance.now();
    let database: HealthCheck;
    try {
      await withTimeout(ping(deps.db), deps.timeoutMs, 'the database');
      const ms = Math.round(performance.now() - started);
      database = { componentType: 'datastore', observedValue: ms, observedUnit: 'ms', status: 'pass', time };
    } catch (err) {
      deps.logger.warn({ check: 'database', ...brief(err) }, 'health: database check failed');
      database = {
        componentType: 'datastore',
        observedValue: Math.round(performance.now() - started),
        observedUnit: 'ms',
        status: 'fail',
        time,
        output: 'database_unreachable',
      };
    }
    const circuit = deps.breakerState();
    // An open circuit degrades charges to pending; it is a warning, never an outage of ours.
    const processor: HealthCheck = {
      componentType: 'component',
      observedValue: circuit,
      status: circuit === 'closed' ? 'pass' : 'warn',
      time,
    };
    const depth = await withTimeout(deps.backlog(), deps.timeoutMs, 'the job queue').catch(() => undefined);
    const unknown: HealthCheck = { componentType: 'component', observedValue: 'unknown', status: 'warn', time };
    const backlog: HealthCheck = depth
      ? {
          componentType: 'component',
          observedValue: depth.backlog,
          observedUnit: 'jobs',
          status: depth.backlog > BACKLOG_WARN || depth.dead > 0 ? 'warn' : 'pass',
          time,
          ...(depth.dead > 0 ? { output: `${depth.dead} dead-lettered job(s) not yet swept` } : {}),
        }
      : unknown;
    // A payment the processor may have made, and cannot be asked about: worth a look, never failed.
    const reconciliation: HealthCheck = depth
      ? {
          componentType: 'component',
          observedValue: depth.awaitingReconciliation,
          observedUnit: 'payments',
          status: depth.awaitingReconciliation > 0 ? 'warn' : 'pass',
          time,
        }
      : unknown;
    return {
      status: worst([database.status, processor.status, backlog.status, reconciliation.status]),
      checks: {
        'database:responseTime': [database],
        'processor:circuit': [processor],
        'queue:backlog': [backlog],
        'payments:awaitingReconciliation': [reconciliation],
      },
    };
  }

  return function health(): Promise<HealthReport> {
    if (!cached || Date.now() - cached.at > HEALTH_CACHE_MS) cached = { at: Date.now(), report: measure() };
    return cached.report;
  };
}

export type Health = ReturnType<typeof createHealth>;
