// Queries on events. An event is written by the statement or transaction that makes its change, with
// whatever its fan-out adds (the composition root wires webhooks' deliveries in: see EventFanOut).
import { type Selectable, sql } from 'kysely';
import { type Ctes, cte, followedBy, slot, withClause } from '../db/ctes.ts';
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
export type EventFanOut = Ctes<string, 'event'>;

// An event's time is when it is written, not when its transaction began (`now()`): it is written after the
// row locks of its change, so events of one object are in the order their changes were made, and two
// events of one transaction (refund.failed, then charge.updated) in the order they were written.

/**
 * CTEs that write `event`, followed by its fan-out: all of them or none, with the statement. Only when the
 * earlier CTE `onlyAfter` returned a row, when given (the change the event records).
 */
export function eventCtes<After extends string = never>(event: NewEvent, fanOut?: EventFanOut, onlyAfter?: After): Ctes<'event', After> {
  const written = cte('event', onlyAfter ? [onlyAfter] : [], (ref) => sql`
    insert into events (id, account_id, type, data, created_at)
    select ${event.id}, ${event.accountId}, ${event.type}, ${JSON.stringify(event.object)}::jsonb, clock_timestamp()
    where ${onlyAfter ? sql`exists (select 1 from ${ref(onlyAfter)})` : sql`true`}
    returning id, account_id, type`);
  return fanOut ? followedBy(written, fanOut) : written;
}

/**
 * CTEs that write `event` for each row of the earlier CTE `source` (its `account_id`, and its `object`: the
 * object as JSON, built by the statement), followed by its fan-out. Built once: the event's id is the slot
 * `source_event_id` (one row of `source` at most).
 */
export function sourcedEventCtes<Source extends string>(source: Source, type: EventType, fanOut?: EventFanOut): Ctes<'event', Source> {
  const written = cte('event', [source], (ref) => sql`
    insert into events (id, account_id, type, data, created_at)
    select ${slot('source_event_id')}, s.account_id, ${sql.lit(type)}, s.object, clock_timestamp() from ${ref(source)} s
    returning id, account_id, type`);
  return fanOut ? followedBy(written, fanOut) : written;
}

/** Writes an event and its fan-out inside `trx`: they exist if and only if the transaction commits. */
export async function insertEvent(trx: DbOrTrx, event: NewEvent, fanOut?: EventFanOut): Promise<void> {
  await sql`${withClause(eventCtes(event, fanOut)).sql} select 1`.execute(trx);
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
