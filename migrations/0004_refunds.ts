import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('refunds')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id').onDelete('cascade'))
    .addColumn('charge_id', 'text', (c) => c.notNull().references('charges.id').onDelete('cascade'))
    .addColumn('idempotency_key_id', 'uuid', (c) => c.unique().references('idempotency_keys.id').onDelete('set null'))
    .addColumn('amount', 'bigint', (c) => c.notNull().check(sql`amount > 0 and amount <= 99999999`))
    .addColumn('currency', 'text', (c) => c.notNull())
    .addColumn('reason', 'text', (c) =>
      c.check(sql`reason is null or reason in ('duplicate', 'fraudulent', 'requested_by_customer')`),
    )
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('pending', 'succeeded', 'failed')`))
    .addColumn('failure_code', 'text')
    .addColumn('failure_message', 'text')
    .addColumn('processor_idempotency_key', 'text', (c) => c.notNull().unique())
    .addColumn('processor_reference', 'text', (c) => c.unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint('refunds_failed_has_code', sql`(status = 'failed') = (failure_code is not null)`)
    .execute();
  await db.schema.createIndex('refunds_charge_id_idx').on('refunds').column('charge_id').execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('refunds').execute();
}
