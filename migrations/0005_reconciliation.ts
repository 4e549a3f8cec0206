// Unknown is not failed: payments the processor may have made wait for reconciliation instead of failing,
// and every settle or reconcile job is the only live one for its payment.
import { type Kysely, sql } from 'kysely';

const EXCLUSIVE = { policy: 'exclusive', deadLetter: 'settle-dead' };

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const table of ['charges', 'refunds']) {
    // Set while the processor could not say what became of a payment past its settle window.
    await sql`alter table ${sql.table(table)} add column reconcile_since timestamptz`.execute(db);
    // The sweep looks for pending payments that lost their job.
    await sql`create index ${sql.id(`${table}_pending_idx`)} on ${sql.table(table)} (created_at) where status = 'pending'`.execute(
      db,
    );
    // The give-up of earlier versions called these failed without the processor's word: they are unknown.
    await sql`
      update ${sql.table(table)}
      set status = 'pending', failure_code = null, failure_message = null, reconcile_since = now(), updated_at = now()
      where status = 'failed' and failure_code = 'processor_unavailable' and processor_reference is null`.execute(db);
  }
  // Dead letters of the old give-up were counted by the code that made them, and their payments are now
  // flagged above: closed here, so the sweep neither counts them again nor mistakes them for new ones.
  await sql`update pgboss.job set state = 'completed', completed_on = now() where name = 'settle-dead' and state < 'active'`.execute(
    db,
  );
  // A queue's policy is fixed when it is made. Jobs of the old settle queue are dropped with it; the sweep
  // gives each pending payment a new one.
  await sql`select pgboss.delete_queue('settle')`.execute(db);
  await sql`select pgboss.create_queue('settle', ${JSON.stringify(EXCLUSIVE)}::jsonb)`.execute(db);
  await sql`select pgboss.create_queue('reconcile', ${JSON.stringify(EXCLUSIVE)}::jsonb)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`select pgboss.delete_queue('reconcile')`.execute(db);
  await sql`select pgboss.delete_queue('settle')`.execute(db);
  await sql`select pgboss.create_queue('settle', ${JSON.stringify({ policy: 'standard', deadLetter: 'settle-dead' })}::jsonb)`.execute(db);
  for (const table of ['charges', 'refunds']) {
    await sql`drop index ${sql.id(`${table}_pending_idx`)}`.execute(db);
    await sql`alter table ${sql.table(table)} drop column reconcile_since`.execute(db);
  }
}
