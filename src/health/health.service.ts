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
