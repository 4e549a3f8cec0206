// Queries on idempotency_keys. Every time comparison uses the database clock, never this process's.
import { type RawBuilder, type Selectable, sql } from 'kysely';
import { compiledOnce, type Ctes, cte, filled, followedBy, slot, type SlotValues, withClause } from '../db/ctes.ts';
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
  'recovery_point',
  'response_status',
  'response_headers',
  'lease_token',
] as const;

/**
 * A key as its statements return it. The stored answer's body comes as the JSON text it was stored as (a
 * `json` column keeps it byte for byte): a replay sends it as it is, and nothing parses it unless asked to.
 * The request's own body is never read back; its fingerprint says all a retry needs.
 */
export type KeyRow = Pick<Selectable<IdempotencyKeysTable>, (typeof KEY_COLUMNS)[number]> & { response_body: string | null };

const RESPONSE_TEXT = sql<string | null>`response_body::text`.as('response_body');
/** KEY_COLUMNS for a select or returning clause, with the body as text. */
const KEY_SELECTION = [...KEY_COLUMNS, RESPONSE_TEXT] as const;

// The column lists of the claiming statement, built once: a reference kysely parses costs microseconds
// each time it is compiled, and these are the same on every request.
const columnList = (alias: string) => sql.raw([...KEY_COLUMNS.map((c) => `${alias}.${c}`), `${alias}.response_body::text as response_body`].join(', '));
const CLAIMED_COLUMNS = columnList('claimed');
const EXISTING_COLUMNS = columnList('k');
const INSERTED_COLUMNS = sql.raw([...KEY_COLUMNS, 'response_body'].join(', '));

export interface NewKey {
  accountId: string;
  key: string;
  method: string;
  path: string;
  fingerprint: string;
  body: JsonObject;
}

/**
 * Inserts the key with a fresh lease named by `leaseToken`, or returns undefined when the account already
 * has it. Every lease token comes from the caller, so a caller whose statement went unanswered still
 * knows the token it may hold, and can give the lease back.
 */
export async function insertKeyIfAbsent(db: DbOrTrx, k: NewKey, ttlSeconds: number, leaseToken: string): Promise<KeyRow | undefined> {
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
      lease_token: leaseToken,
      expires_at: sql<Date>`now() + make_interval(secs => ${ttlSeconds})`,
    })
    .onConflict((oc) => oc.columns(['account_id', 'key']).doNothing())
    .returning(KEY_SELECTION)
    .executeTakeFirst();
}

/**
 * The local rows of a new request, written by the statement that claims its key. Its pieces are built
 * once (module constants whose values are slots: see Slot in db/ctes.ts), and `values` fills them in.
 */
export interface Intent {
  /**
   * CTEs that define `intent` (and may define more), reading the new key from `claimed` (`id`,
   * `account_id`): empty when the key already exists, so they write nothing then. What `intent` returns
   * comes back as JSON.
   */
  ctes: Ctes<'intent', 'claimed'>;
  /** Whether the request can be recorded at once; when false, nothing at all is written. */
  when?: RawBuilder<boolean>;
  /** The values of the slots of `ctes` and `when`. */
  values: SlotValues;
}

/** A condition the claim checks in its snapshot (see RequestGuard), built once, with its slots' values. */
export interface Guard {
  holds: RawBuilder<boolean>;
  values: SlotValues;
}

export type ClaimedRow = KeyState & { claimed: boolean; intent: unknown };

const ALWAYS = sql<boolean>`true`;
const claimStatements = compiledOnce();

/**
 * The first phase in one statement, no row locks: inserts the key with a fresh lease and, in the same
 * statement, the request's own rows (`intent`). When the key exists, returns it as it was (with its
 * expiry and lease read by the database clock) and writes nothing. No row at all: `when` said no, or
 * another request inserted the key after this statement's snapshot, or `guard` does not hold (it is
 * checked on both ways, in the statement's one snapshot); the caller then decides under locks. The
 * statement is built and compiled once per kind of intent and guard; each request only fills it in.
 */
export async function claimKeyWithIntent(
  db: DbOrTrx,
  k: NewKey & { id: string; leaseToken: string },
  settings: { ttlSeconds: number; leaseSeconds: number },
  intent: Intent,
  guard?: Guard,
): Promise<ClaimedRow | undefined> {
  const when = intent.when ?? ALWAYS;
  const holds = guard?.holds ?? ALWAYS;
  const compiled = claimStatements([intent.ctes, when, holds], db, () => {
    const claimed = cte('claimed', [], () => sql`
      insert into idempotency_keys
        (id, account_id, key, request_method, request_path, request_fingerprint, request_body,
         recovery_point, locked_at, lease_token, expires_at)
      select ${slot('claim_id')}::uuid, ${slot('claim_account')}, ${slot('claim_key')}, ${slot('claim_method')},
             ${slot('claim_path')}, ${slot('claim_fingerprint')}, ${slot('claim_body')}::jsonb, 'intent_recorded', now(),
             ${slot('claim_lease')}::uuid, now() + make_interval(secs => ${slot('claim_ttl')})
      where ${when} and ${holds}
      on conflict (account_id, key) do nothing
      returning ${INSERTED_COLUMNS}`);
    const w = withClause(followedBy(claimed, intent.ctes));
    return sql`
      ${w.sql}
      select ${CLAIMED_COLUMNS}, true as claimed, false as expired, true as leased,
             (select row_to_json(intent) from ${w.ref('intent')} intent) as intent
      from ${w.ref('claimed')} claimed
      union all
      select ${EXISTING_COLUMNS}, false, k.expires_at <= now(),
             k.locked_at is not null and k.locked_at > now() - make_interval(secs => ${slot('claim_lease_seconds')}), null
      from idempotency_keys k
      where k.account_id = ${slot('claim_account')} and k.key = ${slot('claim_key')} and ${holds}`;
  });
  const { rows } = await db.executeQuery<ClaimedRow>(
    filled(compiled, {
      claim_id: k.id,
      claim_account: k.accountId,
      claim_key: k.key,
      claim_method: k.method,
      claim_path: k.path,
      claim_fingerprint: k.fingerprint,
      claim_body: JSON.stringify(k.body),
      claim_lease: k.leaseToken,
      claim_ttl: settings.ttlSeconds,
      claim_lease_seconds: settings.leaseSeconds,
      ...intent.values,
      ...guard?.values,
    }),
  );
  // Both rows only when a key that expired was deleted between the snapshot and the insert: ours is new.
  return rows.find((r) => r.claimed) ?? rows[0];
}

const intentStatements = compiledOnce();

/** The intent of a request whose key was claimed inside a transaction (the careful way). */
export async function recordIntentOf(db: DbOrTrx, keyId: string, intent: Intent): Promise<void> {
  const compiled = intentStatements([intent.ctes], db, () => {
    const claimed = cte('claimed', [], () => sql`select id, account_id from idempotency_keys where id = ${slot('claimed_key_id')}`);
    const w = withClause(followedBy(claimed, intent.ctes));
    return sql`${w.sql} select count(*) from ${w.ref('intent')}`;
  });
  await db.executeQuery(filled(compiled, { claimed_key_id: keyId, ...intent.values }));
}

/** Whether the account holds this key, unexpired (its request was made already). */
export async function keyExists(db: DbOrTrx, accountId: string, key: string): Promise<boolean> {
  const row = await db
    .selectFrom('idempotency_keys')
    .select('id')
    .where('account_id', '=', accountId)
    .where('key', '=', key)
    .where('expires_at', '>', sql<Date>`now()`)
    .executeTakeFirst();
  return row !== undefined;
}

/** Takes the lease of an unfinished key nobody holds; undefined when someone does, or it finished. */
export async function takeLeaseIfFree(db: DbOrTrx, id: string, leaseSeconds: number, leaseToken: string): Promise<KeyRow | undefined> {
  return db
    .updateTable('idempotency_keys')
    .set({ ...NEW_LEASE, lease_token: leaseToken })
    .where('id', '=', id)
    .where('recovery_point', '<>', 'finished')
    .where(sql<boolean>`(locked_at is null or locked_at <= now() - make_interval(secs => ${leaseSeconds}))`)
    .returning(KEY_SELECTION)
    .executeTakeFirst();
}

/** Deletes a finished key past its expiry (as the reaper would); a key that changed meanwhile stays. */
export async function deleteExpiredKey(db: DbOrTrx, id: string): Promise<void> {
  await db
    .deleteFrom('idempotency_keys')
    .where('id', '=', id)
    .where('recovery_point', '=', 'finished')
    .where('expires_at', '<=', sql<Date>`now()`)
    .execute();
}

/**
 * What a request's outcome writes with its key's finish, in one statement: CTEs that define `change` (a
 * data-modifying statement that returns a row when it changed something, and changes nothing unless
 * `lease` has its row: the request still holds its key's lease, and the row is locked by then) and may
 * define more, which write only when `change` did.
 */
export type Changes = Ctes<'change', 'lease'>;

/** The Changes of an outcome that changes nothing but the key: its `change` is the lease alone. */
export const nothingToChange = (): Changes => cte('change', ['lease'], (ref) => sql`select 1 from ${ref('lease')}`);

/**
 * The last phase in one statement: `changes` and the key finished with `response`, all or nothing. The
 * key's row is locked first, so a lease taken over meanwhile is seen, not a snapshot's stale one. False
 * when `change` changed nothing or the lease was lost: the caller then records the outcome the careful way.
 */
export async function finishKeyWith(
  db: DbOrTrx,
  key: Pick<KeyRow, 'id' | 'lease_token'>,
  changes: Changes,
  response: { status: number; body: JsonObject; headers: Record<string, string> },
): Promise<boolean> {
  const lease = cte('lease', [], () => sql`
    select id from idempotency_keys
    where id = ${key.id} and lease_token = ${key.lease_token} and recovery_point <> 'finished'
    for no key update`);
  const finished = cte('finished', ['change'], (ref) => sql`
    update idempotency_keys
    set recovery_point = 'finished', locked_at = null, lease_token = null, response_status = ${response.status},
        response_body = ${JSON.stringify(response.body)}, response_headers = ${JSON.stringify(response.headers)}
    where id = ${key.id} and lease_token = ${key.lease_token} and recovery_point <> 'finished'
      and exists (select 1 from ${ref('change')})
    returning id`);
  const w = withClause(followedBy(followedBy(lease, changes), finished));
  const { rows } = await sql<{ finished: number }>`${w.sql} select count(*)::int as finished from ${w.ref('finished')}`.execute(db);
  return rows[0]?.finished === 1;
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
    .select(KEY_SELECTION)
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
  return db.selectFrom('idempotency_keys').select(KEY_SELECTION).where('id', '=', id).forUpdate().executeTakeFirst();
}

export async function deleteKey(db: DbOrTrx, id: string): Promise<void> {
  await db.deleteFrom('idempotency_keys').where('id', '=', id).execute();
}

const NEW_LEASE = {
  locked_at: sql<Date>`now()`,
  last_run_at: sql<Date>`now()`,
  lease_token: sql<string>`gen_random_uuid()`,
};

/** Takes the lease on a locked row, named by `leaseToken` (its holder's own); returns the token. */
export async function takeLease(db: DbOrTrx, id: string, leaseToken: string): Promise<string> {
  const row = await db
    .updateTable('idempotency_keys')
    .set({ ...NEW_LEASE, lease_token: leaseToken })
    .where('id', '=', id)
    .returning('lease_token')
    .executeTakeFirstOrThrow();
  return row.lease_token!;
}

/** Gives up the lease, unless someone else has taken it since; true when it was held and is given up now. */
export async function releaseLease(db: DbOrTrx, key: Pick<KeyRow, 'id' | 'lease_token'>): Promise<boolean> {
  if (!key.lease_token) return false;
  const result = await db
    .updateTable('idempotency_keys')
    .set({ locked_at: null, lease_token: null })
    .where('id', '=', key.id)
    .where('lease_token', '=', key.lease_token)
    .where('recovery_point', '<>', 'finished')
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
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
    .returning(KEY_SELECTION)
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
