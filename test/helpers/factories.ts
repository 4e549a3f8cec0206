// Data factories: each test makes its own accounts and keys.
import { randomUUID } from 'node:crypto';
import { createAccount } from '../../src/accounts/accounts.service.ts';
import type { Db } from '../../src/db/database.ts';

export async function makeAccount(db: Db, name = `Test ${randomUUID().slice(0, 8)}`) {
  const { account, apiKey } = await createAccount(db, name);
  return { account, apiKey, auth: { Authorization: `Bearer ${apiKey}` } };
}
