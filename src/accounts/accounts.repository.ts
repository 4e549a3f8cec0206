import type { Selectable } from 'kysely';
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
