// The job queue's schema, installed by our migrator so it is applied explicitly (npm run migrate), never
// silently when a process starts. pg-boss upgrades that change its schema version need a new migration
// built from getMigrationPlans().
import { type Kysely, sql } from 'kysely';
import { getConstructionPlans, getUninstallPlans } from 'pg-boss';

const JOB_SCHEMA = 'pgboss';

/** pg-boss wraps its plan in BEGIN/COMMIT; the migrator already runs each migration in a transaction. */
function withoutOwnTransaction(plan: string): string {
  const inner = plan.replace(/^\s*BEGIN;/, '').replace(/COMMIT;\s*$/, '');
  if (inner === plan || /\bBEGIN;|\bCOMMIT;/.test(inner)) throw new Error('unexpected pg-boss plan shape');
  return inner;
}

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(withoutOwnTransaction(getConstructionPlans(JOB_SCHEMA))).execute(db);
  // Settle jobs, and the dead letters of those that ran out of attempts. Retry settings are applied from
  // the configuration when a process starts and on every job sent.
  await sql`select pgboss.create_queue('settle-dead', ${JSON.stringify({ policy: 'standard', retentionSeconds: 365 * 86400 })}::jsonb)`.execute(db);
  await sql`select pgboss.create_queue('settle', ${JSON.stringify({ policy: 'standard', deadLetter: 'settle-dead' })}::jsonb)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw(getUninstallPlans(JOB_SCHEMA)).execute(db);
}
