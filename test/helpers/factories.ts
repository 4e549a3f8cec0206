// Data factories: each test makes its own accounts and keys.
import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { createAccount } from '../../src/accounts/accounts.service.ts';
import type { Db } from '../../src/db/database.ts';
import { requestFingerprint } from '../../src/idempotency/idempotency.schemas.ts';

export async function makeAccount(db: Db, name = `Test ${randomUUID().slice(0, 8)}`) {
  const { account, apiKey } = await createAccount(db, name);
  return { account, apiKey, auth: { Authorization: `Bearer ${apiKey}` } };
}

/**
 * What a process that died right after phase 1 leaves behind: a pending charge, and its key at
 * intent_recorded with a lease taken `lockedSecondsAgo` seconds ago.
 */
export async function leaveAbandonedCharge(
  db: Db,
  options: { accountId: string; key: string; body: Record<string, unknown>; lockedSecondsAgo: number },
) {
  const { accountId, key, body, lockedSecondsAgo } = options;
  return db.transaction().execute(async (trx) => {
    const { id } = await trx
      .insertInto('idempotency_keys')
      .values({
        account_id: accountId,
        key,
        request_method: 'POST',
        request_path: '/v1/charges',
        request_fingerprint: requestFingerprint('POST', '/v1/charges', body),
        request_body: JSON.stringify(body),
        recovery_point: 'intent_recorded',
        locked_at: sql<Date>`now() - make_interval(secs => ${lockedSecondsAgo})`,
        last_run_at: sql<Date>`now() - make_interval(secs => ${lockedSecondsAgo})`,
        expires_at: sql<Date>`now() + interval '1 day'`,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    const chargeId = `ch_abandoned_${id.slice(0, 8)}`;
    await trx
      .insertInto('charges')
      .values({
        id: chargeId,
        account_id: accountId,
        idempotency_key_id: id,
        amount: Number(body.amount),
        currency: String(body.currency),
        source: String(body.source),
        metadata: '{}',
        status: 'pending',
        processor_idempotency_key: `charge_${id}`,
      })
      .execute();
    return { keyId: id, chargeId };
  });
}
