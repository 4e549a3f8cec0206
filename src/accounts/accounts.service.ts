import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/database.ts';
import { UnauthenticatedError } from '../errors.ts';
import type { RequestGuard } from '../idempotency/idempotency.service.ts';
import { newId } from '../ids.ts';
import {
  type AccountRow,
  findAccountByKeyHash,
  findAccountCountingRequest,
  insertAccount,
  insertApiKey,
  isKeyLive,
  KEY_IS_LIVE,
  type KeyHolder,
  liveKeyValues,
  type RateLimit,
} from './accounts.repository.ts';

export const API_KEY_PATTERN = /^sk_test_[A-Za-z0-9_-]{16,128}$/;

// Keys carry 192 random bits, so a fast hash is enough: there is nothing to brute-force.
export const hashApiKey = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** Creates an account and its first API key. The secret is returned once; only its hash is stored. */
export async function createAccount(db: Db, name: string): Promise<{ account: AccountRow; apiKey: string }> {
  const apiKey = `sk_test_${randomBytes(24).toString('base64url')}`;
  return db.transaction().execute(async (trx) => {
    const account = await insertAccount(trx, { id: newId('acct'), name });
    await insertApiKey(trx, {
      id: newId('key'),
      account_id: account.id,
      prefix: apiKey.slice(0, 12),
      secret_hash: hashApiKey(apiKey),
    });
    return { account, apiKey };
  });
}

/**
 * The account of a live API key, given by its SHA-256 (hashApiKey). The lookup is by that hash, so the time
 * it takes can tell at most something about a hash, never about the secret; the final comparison is
 * constant-time all the same.
 */
export async function authenticate(
  db: Db,
  hash: string,
  limit?: RateLimit,
): Promise<(AccountRow & Pick<KeyHolder, 'limit'>) | undefined> {
  // With a rate limit, the same single statement also counts the request against the key.
  const found: KeyHolder | undefined = limit ? await findAccountCountingRequest(db, hash, limit) : await findAccountByKeyHash(db, hash);
  if (!found) return undefined;
  const { secret_hash: stored, ...account } = found;
  return timingSafeEqual(Buffer.from(stored, 'hex'), Buffer.from(hash, 'hex')) ? account : undefined;
}

export function presentAccount(account: AccountRow) {
  return {
    id: account.id,
    object: 'account' as const,
    name: account.name,
    created: account.created_at.toISOString(),
  };
}

export const UNKNOWN_KEY = 'The API key is not known, or it was revoked.';

/**
 * An API key this process saw live before and takes on trust for now, with how to confirm it: as the guard
 * of the request's own claiming statement (no statement of its own), or, for an answer given on any other
 * way, by a statement before that answer goes out (`confirm`). `forget` runs when it turns out not live.
 */
export interface TrustedKey extends RequestGuard {
  /** Whether the key is live, asking the database unless a statement of this request found out already. */
  confirm(): Promise<boolean>;
}

export function trustedKey(db: Db, secretHash: string, accountId: string, forget: () => void): TrustedKey {
  let live: boolean | undefined;
  const trusted: TrustedKey = {
    holds: KEY_IS_LIVE,
    values: liveKeyValues(secretHash, accountId),
    check: (conn) => isKeyLive(conn, secretHash, accountId),
    found(holds) {
      live = holds;
      if (!holds) forget();
    },
    refusal: () => new UnauthenticatedError(UNKNOWN_KEY),
    async confirm() {
      if (live === undefined) trusted.found(await isKeyLive(db, secretHash, accountId));
      return live!;
    },
  };
  return trusted;
}
