// Events (every state change of a charge or refund, written with the change) and their webhook
// deliveries: one row per (event, endpoint), driven by a job of the `webhook` queue made in the event's
// transaction, with every attempt recorded.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create table events (
      id text primary key,
      account_id text not null references accounts (id) on delete cascade,
      type text not null check (char_length(type) between 1 and 100),
      data jsonb not null,
      created_at timestamptz not null default now()
    )`.execute(db);
  // Newest first per account, with or without a type; and the oldest first for retention.
  await sql`create index events_account_created_idx on events (account_id, created_at desc, id desc)`.execute(db);
  await sql`create index events_account_type_created_idx on events (account_id, type, created_at desc, id desc)`.execute(db);
  await sql`create index events_created_idx on events (created_at)`.execute(db);

  await sql`
    create table webhook_endpoints (
      id text primary key,
      account_id text not null references accounts (id) on delete cascade,
      -- The request that made it: a resumed request finds its endpoint by it.
      idempotency_key_id uuid unique,
      url text not null check (char_length(url) between 1 and 2048),
      enabled_events text[] not null check (cardinality(enabled_events) > 0),
      -- AES-256-GCM under WEBHOOK_SECRET_KEY: signing needs the secret itself, so it cannot be hashed.
      secret_ciphertext text not null,
      status text not null default 'enabled' check (status in ('enabled', 'disabled')),
      disabled_reason text,
      last_success_at timestamptz,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now()
    )`.execute(db);
  await sql`create index webhook_endpoints_account_idx on webhook_endpoints (account_id, created_at desc, id desc)`.execute(db);

  await sql`
    create table webhook_deliveries (
      id uuid primary key default gen_random_uuid(),
      event_id text not null references events (id) on delete cascade,
      endpoint_id text not null references webhook_endpoints (id) on delete cascade,
      account_id text not null,
      status text not null default 'pending' check (status in ('pending', 'succeeded', 'failed')),
      attempts integer not null default 0,
      next_attempt_at timestamptz not null default now(),
      -- Past this, a failed attempt is the last: the delivery is dead-lettered (status failed).
      window_ends_at timestamptz not null,
      last_error text,
      delivered_at timestamptz,
      created_at timestamptz not null default now(),
      unique (event_id, endpoint_id)
    )`.execute(db);
  await sql`create index webhook_deliveries_endpoint_idx on webhook_deliveries (endpoint_id, status)`.execute(db);
  await sql`create index webhook_deliveries_pending_idx on webhook_deliveries (next_attempt_at) where status = 'pending'`.execute(db);
  await sql`create index webhook_deliveries_failed_idx on webhook_deliveries (created_at) where status = 'failed'`.execute(db);

  await sql`
    create table webhook_delivery_attempts (
      id bigint generated always as identity primary key,
      delivery_id uuid not null references webhook_deliveries (id) on delete cascade,
      attempt integer not null,
      started_at timestamptz not null,
      duration_ms integer not null,
      response_status integer,
      error text
    )`.execute(db);
  await sql`create index webhook_delivery_attempts_delivery_idx on webhook_delivery_attempts (delivery_id, attempt)`.execute(db);

  // Retries are ours (full jitter, a time window), not pg-boss's: its own retries only cover a job that
  // failed unexpectedly (the database went away mid-job). The sweep drives a pending delivery left without a job.
  await sql`select pgboss.create_queue('webhook', ${JSON.stringify({ policy: 'standard', retryLimit: 5, retryDelay: 5, retryBackoff: true })}::jsonb)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`select pgboss.delete_queue('webhook')`.execute(db);
  await sql`drop table webhook_delivery_attempts`.execute(db);
  await sql`drop table webhook_deliveries`.execute(db);
  await sql`drop table webhook_endpoints`.execute(db);
  await sql`drop table events`.execute(db);
}
