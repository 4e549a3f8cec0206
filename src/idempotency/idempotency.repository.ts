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
  'lease_token',
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
      lease_token: sql<string>`gen_random_uuid()`,
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

const NEW_LEASE = {
  locked_at: sql<Date>`now()`,
  last_run_at: sql<Date>`now()`,
  lease_token: sql<string>`gen_random_uuid()`,
};

/** Takes the lease on a locked row; returns its token, which names this holder. */
export async function takeLease(db: DbOrTrx, id: string): Promise<string> {
  const row = await db
    .updateTable('idempotency_keys')
    .set(NEW_LEASE)
    .where('id', '=', id)
    .returning('lease_token')
    .executeTakeFirstOrThrow();
  return row.lease_token!;
}

/** Gives up the lease, unless someone else has taken it since. */
export async function releaseLease(db: DbOrTrx, key: Pick<KeyRow, 'id' | 'lease_token'>): Promise<void> {
  if (!key.lease_token) return;
  await db
    .updateTable('idempotency_keys')
    .set({ locked_at: null, lease_token: null })
    .where('id', '=', key.id)
    .where('lease_token', '=', key.lease_token)
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
      lease_token: null,
      response_status: response.status,
      response_body: JSON.stringify(response.body),
      response_headers: JSON.stringify(response.headers),
    })
    .where('id', '=', id)
    .execute();
}

/**
 * Takes the lease of one request that stopped before finishing (its process died, or it failed and
 * released the lease) and whose last run began more than a lease ago, expired or not: an accepted
 * request is finished whatever its age. SKIP LOCKED lets several completers share the work; the
 * lease keeps a client's retry from running beside them.
 */
export async function leaseAbandonedKey(db: DbOrTrx, leaseSeconds: number): Promise<KeyRow | undefined> {
  const abandoned = db
    .selectFrom('idempotency_keys')
    .select('id')
    .where('recovery_point', '<>', 'finished')
    .where(sql<boolean>`coalesce(locked_at, last_run_at) <= now() - make_interval(secs => ${leaseSeconds})`)
    .orderBy('last_run_at')
    .limit(1)
    .forUpdate()
    .skipLocked();
  return db
    .updateTable('idempotency_keys')
    .set(NEW_LEASE)
    .where('id', 'in', abandoned)
    .returning(KEY_COLUMNS)
    .executeTakeFirst();
}

/** Deletes up to `limit` expired, finished keys in one short statement; returns how many. */
export async function deleteExpiredKeys(db: DbOrTrx, limit: number): Promise<number> {
  const expired = db
    .selectFrom('idempotency_keys')
    .select('id')
    .where('expires_at', '<=', sql<Date>`now()`)
    .where('recovery_point', '=', 'finished')
    .orderBy('expires_at')
    .limit(limit)
    .forUpdate()
    .skipLocked();
  const result = await db.deleteFrom('idempotency_keys').where('id', 'in', expired).executeTakeFirst();
  return Number(result.numDeletedRows);
}
