// Queries on idempotency_keys. Every time comparison uses the database clock, never this process's.
import { type Selectable, sql } from 'kysely';
import type { DbOrTrx } from '../db/database.ts';
import type { IdempotencyKeysTable, JsonObject } from '../db/schema.ts';


/** A key row with what the database clock says about it right now. */
export interface KeyState extends KeyRow {
  expired: boolean;
  leased: boolean;
}

const KEY_COLUMNS = [
  'id',
  'account_id',
  'key',
  'request_method',
  'request_path',
  'request_fingerprint',
  'request_body',
  'recovery_point',
  'response_status',
  'response_body',
  'response_headers',
] as const;

export type KeyRow = Pick<Selectable<IdempotencyKeysTable>, (typeof KEY_COLUMNS)[number]>;

export interface NewKey {
  accountId: string;
  key: string;
  method: string;
  path: string;
  fingerprint: string;
  body: JsonObject;
}

/** Inserts the key with a fresh lease, or returns undefined when the account already has it. */
export async function insertKeyIfAbsent(db: DbOrTrx, k: NewKey, ttlSeconds: number): Promise<KeyRow | undefined> {
  return db
    .insertInto('idempotency_keys')
    .values({
      account_id: k.accountId,
      key: k.key,
      request_method: k.method,
      request_path: k.path,
      request_fingerprint: k.fingerprint,
      request_body: JSON.stringify(k.body),
      recovery_point: 'intent_recorded',
      locked_at: sql<Date>`now()`,
      expires_at: sql<Date>`now() + make_interval(secs => ${ttlSeconds})`,
    })
    .onConflict((oc) => oc.columns(['account_id', 'key']).doNothing())
    .returning(KEY_COLUMNS)
    .executeTakeFirst();
}

/** Locks the account's key row for this transaction and reads its expiry and lease by the database clock. */
export async function lockKeyByAccountKey(
  db: DbOrTrx,
  accountId: string,
  key: string,
  leaseSeconds: number,
): Promise<KeyState | undefined> {
  return db
    .selectFrom('idempotency_keys')
    .select(KEY_COLUMNS)
    .select([
      sql<boolean>`expires_at <= now()`.as('expired'),
      sql<boolean>`locked_at is not null and locked_at > now() - make_interval(secs => ${leaseSeconds})`.as('leased'),
    ])
    .where('account_id', '=', accountId)
    .where('key', '=', key)
    .forUpdate()
    .executeTakeFirst();
}

export async function lockKeyById(db: DbOrTrx, id: string): Promise<KeyRow | undefined> {
  return db.selectFrom('idempotency_keys').select(KEY_COLUMNS).where('id', '=', id).forUpdate().executeTakeFirst();
}

export async function deleteKey(db: DbOrTrx, id: string): Promise<void> {
  await db.deleteFrom('idempotency_keys').where('id', '=', id).execute();
}

export async function takeLease(db: DbOrTrx, id: string): Promise<void> {
  await db
    .updateTable('idempotency_keys')
    .set({ locked_at: sql<Date>`now()`, last_run_at: sql<Date>`now()` })
    .where('id', '=', id)
    .execute();
}

export async function releaseLease(db: DbOrTrx, id: string): Promise<void> {
  await db
    .updateTable('idempotency_keys')
    .set({ locked_at: null })
    .where('id', '=', id)
    .where('recovery_point', '<>', 'finished')
    .execute();
}

export async function finishKey(
  db: DbOrTrx,
  id: string,
  response: { status: number; body: JsonObject; headers: Record<string, string> },
): Promise<void> {
  await db
    .updateTable('idempotency_keys')
    .set({
      recovery_point: 'finished',
      locked_at: null,
      response_status: response.status,
      response_body: JSON.stringify(response.body),
      response_headers: JSON.stringify(response.headers),
    })
    .where('id', '=', id)
    .execute();
}

/**
 * Takes the lease of up to `limit` requests that stopped before finishing (their process died, or they
 * failed and released the lease) and whose last run began more than a lease ago. SKIP LOCKED lets
 * several completers share the work; the lease keeps a client's retry from running beside them.
 */
export async function leaseAbandonedKeys(db: DbOrTrx, leaseSeconds: number, limit: number): Promise<KeyRow[]> {
  const abandoned = db
    .selectFrom('idempotency_keys')
    .select('id')
    .where('recovery_point', '<>', 'finished')
    .where('expires_at', '>', sql<Date>`now()`)
    .where(sql<boolean>`coalesce(locked_at, last_run_at) <= now() - make_interval(secs => ${leaseSeconds})`)
    .orderBy('last_run_at')
    .limit(limit)
    .forUpdate()
    .skipLocked();
  return db
    .updateTable('idempotency_keys')
    .set({ locked_at: sql<Date>`now()`, last_run_at: sql<Date>`now()` })
    .where('id', 'in', abandoned)
    .returning(KEY_COLUMNS)
    .execute();
}

/** Deletes up to `limit` expired keys in one short statement; returns how many. */
export async function deleteExpiredKeys(db: DbOrTrx, limit: number): Promise<number> {
  const expired = db
    .selectFrom('idempotency_keys')
    .select('id')
    .where('expires_at', '<=', sql<Date>`now()`)
    .orderBy('expires_at')
    .limit(limit)
    .forUpdate()
    .skipLocked();
  const result = await db.deleteFrom('idempotency_keys').where('id', 'in', expired).executeTakeFirst();
  return Number(result.numDeletedRows);
}
