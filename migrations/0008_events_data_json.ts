// An event's object is kept as the JSON text it was written as (`json`, not `jsonb`, which reorders keys),
// so GET /v1/events/:id and every webhook delivery carry it byte for byte as GET of that object answered
// at that moment. Events written before keep jsonb's key order.
import { type Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table events alter column data type json using data::json`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table events alter column data type jsonb using data::jsonb`.execute(db);
}
