// Queries on events. An event is written by the statement or transaction that makes its change, with
// whatever its fan-out adds (the composition root wires webhooks' deliveries in: see EventFanOut).
import { type RawBuilder, type Selectable, sql } from 'kysely';
import type { DbOrTrx } from '../db/database.ts';
import type { EventsTable, JsonObject } from '../db/schema.ts';
import type { EventType } from './events.schemas.ts';

export type EventRow = Selectable<EventsTable>;

export interface NewEvent {
  id: string;
  accountId: string;
  type: EventType;
  object: JsonObject;
}

/**
 * What else an event writes in its statement: CTEs that read the new event from `event` (`id`,
 * `account_id`, `type`; empty when the event is not written). Events know nothing of who listens; the
 * composition root passes webhooks' deliveries (see deliveriesOf in webhooks.repository.ts).
 */
export type EventFanOut = RawBuilder<unknown>;

/** CTEs that write `event` when `when` holds, followed by its fan-out: all of them or none, with the statement. */
export function eventCtes(event: NewEvent, when: RawBuilder<boolean>, fanOut?: EventFanOut): RawBuilder<unknown> {
  const written = sql`
    event as (
      insert into events (id, account_id, type, data)
      select ${event.id}, ${event.accountId}, ${event.type}, ${JSON.stringify(event.object)}::jsonb
      where ${when}
      returning id, account_id, type
    )`;
  return fanOut ? sql`${written}, ${fanOut}` : written;
}

/** Writes an event and its fan-out inside `trx`: they exist if and only if the transaction commits. */
export async function insertEvent(trx: DbOrTrx, event: NewEvent, fanOut?: EventFanOut): Promise<void> {
  await sql`with ${eventCtes(event, sql<boolean>`true`, fanOut)} select 1`.execute(trx);
}

export async function findEvent(db: DbOrTrx, accountId: string, id: string): Promise<EventRow | undefined> {
  return db.selectFrom('events').selectAll().where('account_id', '=', accountId).where('id', '=', id).executeTakeFirst();
}

/** Newest first, after the event `afterId`, of one type or all (the cursor row is read inside the query). */
export async function listEvents(
  db: DbOrTrx,
  accountId: string,
  options: { limit: number; afterId?: string; type?: EventType },
): Promise<EventRow[]> {
  let query = db
    .selectFrom('events')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(options.limit);
  if (options.type) query = query.where('type', '=', options.type);
  if (options.afterId) {
    query = query.where(sql<boolean>`(created_at, id) < (select e.created_at, e.id from events e where e.id = ${options.afterId})`);
  }
  return query.execute();
}

/**
 * Deletes up to `limit` events older than the retention in one short statement (their deliveries and
 * attempts go with them); an event with a delivery still pending is kept until it ends. Returns how many.
 */
export async function deleteExpiredEvents(db: DbOrTrx, retentionSeconds: number, limit: number): Promise<number> {
  const result = await sql`
    delete from events where id in (
      select e.id from events e
      where e.created_at <= now() - make_interval(secs => ${retentionSeconds})
        and not exists (select 1 from webhook_deliveries d where d.event_id = e.id and d.status = 'pending')
      order by e.created_at
      limit ${limit}
      for update skip locked)`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
