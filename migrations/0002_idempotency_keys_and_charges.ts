import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await db.schema
    .createTable('idempotency_keys')
    .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id').onDelete('cascade'))
    .addColumn('key', 'text', (c) => c.notNull().check(sql`char_length(key) between 1 and 255`))
    .addColumn('request_method', 'text', (c) => c.notNull())
    .addColumn('request_path', 'text', (c) => c.notNull())
    .addColumn('request_fingerprint', 'text', (c) => c.notNull())
    .addColumn('request_body', 'jsonb', (c) => c.notNull())
    .addColumn('recovery_point', 'text', (c) =>
      c.notNull().check(sql`recovery_point in ('intent_recorded', 'finished')`),
    )
    .addColumn('locked_at', 'timestamptz')
    // Names the holder of the current lease, so only that holder can release it.
    .addColumn('lease_token', 'uuid')
    .addColumn('response_status', 'integer')
    // json, not jsonb: a replay must give back the body with its keys in their original order.
    .addColumn('response_body', 'json')
    .addColumn('response_headers', 'jsonb')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('last_run_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('expires_at', 'timestamptz', (c) => c.notNull())
    .addUniqueConstraint('idempotency_keys_account_key_unique', ['account_id', 'key'])
    .addCheckConstraint(
      'idempotency_keys_finished_has_response',
      sql`(recovery_point = 'finished') = (response_status is not null and response_body is not null)`,
    )
    .execute();
  await db.schema.createIndex('idempotency_keys_expires_at_idx').on('idempotency_keys').column('expires_at').execute();
  await db.schema
    .createIndex('idempotency_keys_unfinished_idx')
    .on('idempotency_keys')
    .column('locked_at')
    .where(sql.ref('recovery_point'), '<>', 'finished')
    .execute();

  await db.schema
    .createTable('charges')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('account_id', 'text', (c) => c.notNull().references('accounts.id').onDelete('cascade'))
    .addColumn('idempotency_key_id', 'uuid', (c) => c.unique().references('idempotency_keys.id').onDelete('set null'))
    .addColumn('amount', 'bigint', (c) => c.notNull().check(sql`amount > 0 and amount <= 99999999`))
    .addColumn('currency', 'text', (c) => c.notNull().check(sql`currency ~ '^[a-z]{3}$'`))
    .addColumn('source', 'text', (c) => c.notNull())
    .addColumn('description', 'text')
    .addColumn('metadata', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('pending', 'succeeded', 'failed')`))
    .addColumn('amount_refunded', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('failure_code', 'text')
    .addColumn('failure_message', 'text')
    .addColumn('processor_idempotency_key', 'text', (c) => c.notNull().unique())
    .addColumn('processor_reference', 'text', (c) => c.unique())
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint('charges_refunded_within_amount', sql`amount_refunded >= 0 and amount_refunded <= amount`)
    .addCheckConstraint('charges_refunds_only_when_succeeded', sql`amount_refunded = 0 or status = 'succeeded'`)
    .addCheckConstraint('charges_failed_has_code', sql`(status = 'failed') = (failure_code is not null)`)
    .execute();
  await db.schema
    .createIndex('charges_account_list_idx')
    .on('charges')
    .columns(['account_id', 'created_at desc', 'id desc'])
    .execute();
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await db.schema.dropTable('charges').execute();
  await db.schema.dropTable('idempotency_keys').execute();
}
