// What /readyz asks: can this process do its work right now?
import { sql } from 'kysely';
import { type Db, knownMigrations } from '../db/database.ts';

export interface ReadinessResult {
  ready: boolean;
  checks: Record<string, { status: 'pass' | 'fail'; detail?: string }>;
}

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

/** Missing migrations, by name; throws when the database does not answer. */
async function missingMigrations(db: Db): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`select name from kysely_migration`.execute(db);
  const applied = new Set(rows.map((r) => r.name));
  return knownMigrations().filter((m) => !applied.has(m));
}

export function createReadiness(deps: { db: Db; timeoutMs: number; isShuttingDown: () => boolean }) {
  return async function readiness(): Promise<ReadinessResult> {
    if (deps.isShuttingDown()) {
      return {
        ready: false,
        checks: { shutdown: { status: 'fail', detail: 'the process is shutting down' } },
      };
    }
    try {
      const missing = await withTimeout(missingMigrations(deps.db), deps.timeoutMs, 'the database');
      const migrations = missing.length
        ? { status: 'fail' as const, detail: `pending migrations: ${missing.join(', ')}` }
        : { status: 'pass' as const };
      return { ready: missing.length === 0, checks: { database: { status: 'pass' }, migrations } };
    } catch (err) {
      const detail = /kysely_migration/.test(String(err))
        ? 'schema not migrated'
        : String((err as Error).message);
      return { ready: false, checks: { database: { status: 'fail', detail } } };
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
  timeoutMs: number;
  breakerState: () => string;
  queueDepth: () => Promise<{ backlog: number; dead: number }>;
}) {
  let cached: { at: number; report: Promise<HealthReport> } | undefined;

  async function measure(): Promise<HealthReport> {
    const time = new Date().toISOString();
    const started = performance.now();
    let database: HealthCheck;
    try {
      await withTimeout(sql`select 1`.execute(deps.db), deps.timeoutMs, 'the database');
      const ms = Math.round(performance.now() - started);
      database = { componentType: 'datastore', observedValue: ms, observedUnit: 'ms', status: 'pass', time };
    } catch (err) {
      database = {
        componentType: 'datastore',
        observedValue: Math.round(performance.now() - started),
        observedUnit: 'ms',
        status: 'fail',
        time,
        output: (err as Error).message,
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
    const depth = await withTimeout(deps.queueDepth(), deps.timeoutMs, 'the job queue').catch(() => undefined);
    const backlog: HealthCheck = depth
      ? {
          componentType: 'component',
          observedValue: depth.backlog,
          observedUnit: 'jobs',
          status: depth.backlog > BACKLOG_WARN || depth.dead > 0 ? 'warn' : 'pass',
          time,
          ...(depth.dead > 0 ? { output: `${depth.dead} dead-lettered settle job(s)` } : {}),
        }
      : { componentType: 'component', observedValue: 'unknown', status: 'warn', time };
    return {
      status: worst([database.status, processor.status, backlog.status]),
      checks: {
        'database:responseTime': [database],
        'processor:circuit': [processor],
        'queue:backlog': [backlog],
      },
    };
  }

  return function health(): Promise<HealthReport> {
    if (!cached || Date.now() - cached.at > HEALTH_CACHE_MS) cached = { at: Date.now(), report: measure() };
    return cached.report;
  };
}

export type Health = ReturnType<typeof createHealth>;
