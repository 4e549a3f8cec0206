// Per-key rate limits shared by every api copy: one row per API key, its current window and the requests
// counted in it. UNLOGGED: a count writes no WAL, so its commit waits for no disk flush; a crash empties the
// table and the limits start afresh, which a rate limit can afford.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create unlogged table rate_limit_windows (
      api_key_id text primary key,
      window_index bigint not null,
      hits integer not null check (hits > 0)
    )`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop table rate_limit_windows`.execute(db);
}
