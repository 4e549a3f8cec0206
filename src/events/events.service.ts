// Events: what happened to a charge or refund, written in the transaction (or the statement) that made it
// happen, so an event exists exactly when its change does. Reads for GET /v1/events; the reaper's removal.
import type { Config } from '../config.ts';
import type { Ctes } from '../db/ctes.ts';
import type { Db, DbOrTrx } from '../db/database.ts';
import type { JsonObject } from '../db/schema.ts';
import { NotFoundError, ValidationError } from '../errors.ts';
import { newId } from '../ids.ts';
import { objectId } from '../validation.ts';
import { deleteExpiredEvents, eventCtes, type EventFanOut, type EventRow, findEvent, insertEvent, listEvents, sourcedEventCtes } from './events.repository.ts';
import type { Event, EventType } from './events.schemas.ts';

/**
 * The order each kind of object (by its `object` field) is presented in: an event's object is kept as
 * jsonb, which orders keys its own way, and is shown again in the order GET of that object answers in,
 * so the two are the same bytes. The composition root gives each module's own schema.
 */
export type ObjectKeyOrders = Readonly<Record<string, readonly string[]>>;

/** `object` with its keys in `order` (any key not in it after them, as it came). */
function inOrder(object: JsonObject, order: readonly string[] | undefined): JsonObject {
  if (!order) return object;
  const ordered: JsonObject = {};
  for (const key of order) if (key in object) ordered[key] = object[key]!;
  for (const key of Object.keys(object)) if (!(key in ordered)) ordered[key] = object[key]!;
  return ordered;
}

export function presentEvent(row: EventRow, orders: ObjectKeyOrders = {}): Event {
  const object = row.data as JsonObject;
  return {
    id: row.id,
    object: 'event',
    type: row.type as EventType,
    created: row.created_at.toISOString(),
    data: { object: inOrder(object, orders[String(object.object)]) },
  };
}

export interface EventSettings {
  /** How long events are kept (EVENT_RETENTION_SECONDS). */
  retentionSeconds: number;
}

export const eventSettings = (config: Config): EventSettings => ({ retentionSeconds: config.EVENT_RETENTION_SECONDS });

/** `fanOut`: what else every event writes with it (the composition root passes webhooks' deliveries). */
export function createEvents(deps: { db: Db; settings: EventSettings; fanOut?: EventFanOut; objectKeyOrders?: ObjectKeyOrders }) {
  const { db, settings, fanOut, objectKeyOrders = {} } = deps;
  const present = (row: EventRow) => presentEvent(row, objectKeyOrders);
  const newEventId = () => newId('evt');
  const event = (accountId: string, type: EventType, object: JsonObject) => ({ id: newEventId(), accountId, type, object });
  return {
    /** Inside a transaction: the event and its fan-out commit with it or not at all. */
    async record(trx: DbOrTrx, accountId: string, type: EventType, object: JsonObject): Promise<void> {
      await insertEvent(trx, event(accountId, type, object), fanOut);
    },

    /** The same as CTEs of one statement, written only when the CTE `onlyAfter` returned a row (see eventCtes). */
    ctes<After extends string>(accountId: string, type: EventType, object: JsonObject, onlyAfter: After): Ctes<'event', After> {
      return eventCtes(event(accountId, type, object), fanOut, onlyAfter);
    },

    /**
     * Built once: CTEs that write an event of `type` for the row the earlier CTE `source` returns (its
     * `account_id` and `object`), with the fan-out; its id is the slot `source_event_id` (see `newEventId`).
     */
    sourced<Source extends string>(source: Source, type: EventType): Ctes<'event', Source> {
      return sourcedEventCtes(source, type, fanOut);
    },

    newEventId,

    /** An event as GET /v1/events/:id shows it and every delivery carries it. */
    present,

    async get(accountId: string, id: string): Promise<Event> {
      const row = objectId('evt').safeParse(id).success ? await findEvent(db, accountId, id) : undefined;
      if (!row) throw new NotFoundError(`No event ${id}.`);
      return present(row);
    },

    async list(accountId: string, query: { limit: number; starting_after?: string; type?: EventType }) {
      if (query.starting_after && !(await findEvent(db, accountId, query.starting_after))) {
        throw new ValidationError([{ path: 'starting_after', message: `no event ${query.starting_after}` }]);
      }
      const rows = await listEvents(db, accountId, { limit: query.limit + 1, afterId: query.starting_after, type: query.type });
      return { object: 'list' as const, data: rows.slice(0, query.limit).map(present), has_more: rows.length > query.limit };
    },

    /** Removes events past their retention, a batch per statement, at most `maxBatches` per pass. */
    async removeExpired(options: { batchSize: number; maxBatches: number }): Promise<number> {
      let removed = 0;
      for (let batch = 0; batch < options.maxBatches; batch += 1) {
        const deleted = await deleteExpiredEvents(db, settings.retentionSeconds, options.batchSize);
        removed += deleted;
        if (deleted < options.batchSize) break;
      }
      return removed;
    },
  };
}

export type Events = ReturnType<typeof createEvents>;
