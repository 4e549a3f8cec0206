import { type RawBuilder, type Selectable, sql } from 'kysely';
import { compiledOnce, filled, slot, type SlotValues } from '../db/ctes.ts';
import type { DbOrTrx } from '../db/database.ts';
import type { AccountsTable } from '../db/schema.ts';

export type AccountRow = Selectable<AccountsTable>;

export async function insertAccount(db: DbOrTrx, account: { id: string; name: string }): Promise<AccountRow> {
  return db.insertInto('accounts').values(account).returningAll().executeTakeFirstOrThrow();
}

export async function insertApiKey(
  db: DbOrTrx,
  key: { id: string; account_id: string; prefix: string; secret_hash: string },
): Promise<void> {
  await db.insertInto('api_keys').values(key).execute();
}

/** The account of a key that is not revoked, with the stored hash it matched. */
export async function findAccountByKeyHash(
  db: DbOrTrx,
  secretHash: string,
): Promise<(AccountRow & { secret_hash: string }) | undefined> {
  return db
    .selectFrom('api_keys')
    .innerJoin('accounts', 'accounts.id', 'api_keys.account_id')
    .select(['accounts.id', 'accounts.name', 'accounts.created_at', 'api_keys.secret_hash'])
    .where('api_keys.secret_hash', '=', secretHash)
    .where('api_keys.revoked_at', 'is', null)
    .executeTakeFirst();
}

export async function countAccounts(db: DbOrTrx): Promise<number> {
  const row = await db
    .selectFrom('accounts')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export interface RateLimit {
  requests: number;
  windowSeconds: number;
}

/** The account of a live key, and what its request did to the key's rate limit. */
export type KeyHolder = AccountRow & { secret_hash: string; limit?: { counted: boolean; hits: number; reset_seconds: number } };

/**
 * findAccountByKeyHash and the key's rate limit in one statement: the request is counted in the key's
 * current window (by the database clock, so every api copy counts in the same one) unless the window is
 * full. `counted` false: limited, and nothing was counted. A key that is not live counts nothing.
 */
export async function findAccountCountingRequest(
  db: DbOrTrx,
  secretHash: string,
  limit: RateLimit,
): Promise<KeyHolder | undefined> {
  const { rows } = await sql<AccountRow & { secret_hash: string; counted: number | null; hits: number; reset_seconds: number }>`
    with now as (select floor(extract(epoch from now()) / ${limit.windowSeconds})::bigint as window_index,
                        extract(epoch from now()) as epoch),
    holder as (
      select api_keys.id as key_id, accounts.id, accounts.name, accounts.created_at, api_keys.secret_hash
      from api_keys inner join accounts on accounts.id = api_keys.account_id
      where api_keys.secret_hash = ${secretHash} and api_keys.revoked_at is null
    ),
    counted as (
      insert into rate_limit_windows as w (api_key_id, window_index, hits)
      select holder.key_id, now.window_index, 1 from holder, now
      on conflict (api_key_id) do update
        set window_index = excluded.window_index,
            hits = case when w.window_index = excluded.window_index then w.hits + 1 else 1 end
        where w.window_index <> excluded.window_index or w.hits < ${limit.requests}
      returning hits
    )
    select holder.id, holder.name, holder.created_at, holder.secret_hash,
           (select hits from counted) as counted,
           coalesce((select hits from counted), ${limit.requests}) as hits,
           ceil((now.window_index + 1) * ${limit.windowSeconds} - now.epoch)::int as reset_seconds
    from holder, now`.execute(db);
  const row = rows[0];
  if (!row) return undefined;
  const { counted, hits, reset_seconds, ...holder } = row;
  return { ...holder, limit: { counted: counted !== null, hits, reset_seconds: Math.max(1, reset_seconds) } };
}

/**
 * Whether the key with this hash is live and is this account's, as a condition for another statement,
 * built once: its values are the slots `live_key_hash` and `live_key_account` (see liveKeyValues).
 */
export const KEY_IS_LIVE: RawBuilder<boolean> = sql<boolean>`exists (
  select 1 from api_keys where secret_hash = ${slot('live_key_hash')} and account_id = ${slot('live_key_account')} and revoked_at is null)`;

export const liveKeyValues = (secretHash: string, accountId: string): SlotValues => ({ live_key_hash: secretHash, live_key_account: accountId });

const keyCheckStatements = compiledOnce();

/** KEY_IS_LIVE as a statement of its own. */
export async function isKeyLive(db: DbOrTrx, secretHash: string, accountId: string): Promise<boolean> {
  const compiled = keyCheckStatements([KEY_IS_LIVE], db, () => sql`select ${KEY_IS_LIVE} as live`);
  const { rows } = await db.executeQuery<{ live: boolean }>(filled(compiled, liveKeyValues(secretHash, accountId)));
  return rows[0]?.live === true;
}
