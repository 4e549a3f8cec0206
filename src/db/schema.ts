// Row types of our tables, as Kysely sees them.
import type { ColumnType } from 'kysely';

type CreatedAt = ColumnType<Date, never, never>;

export interface AccountsTable {
  id: string;
  name: string;
  created_at: CreatedAt;
}

export interface ApiKeysTable {
  id: string;
  account_id: string;
  prefix: string;
  secret_hash: string;
  created_at: CreatedAt;
  revoked_at: Date | null;
}

export interface Database {
  accounts: AccountsTable;
  api_keys: ApiKeysTable;
}
