import { type Selectable, sql } from 'kysely';
import type { DbOrTrx } from '../db/database.ts';
import type { RefundsTable } from '../db/schema.ts';

export type RefundRow = Selectable<RefundsTable>;

export async function insertPendingRefund(
  db: DbOrTrx,
  refund: Omit<RefundRow, 'status' | 'failure_code' | 'failure_message' | 'processor_reference' | 'created_at' | 'updated_at'>,
): Promise<RefundRow> {
  return db
    .insertInto('refunds')
    .values({ ...refund, status: 'pending' })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findRefund(db: DbOrTrx, accountId: string, id: string): Promise<RefundRow | undefined> {
  return db
    .selectFrom('refunds')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('id', '=', id)
    .executeTakeFirst();
}

export async function findRefundById(db: DbOrTrx, id: string): Promise<RefundRow | undefined> {
  return db.selectFrom('refunds').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function lockRefundById(db: DbOrTrx, id: string): Promise<RefundRow | undefined> {
  return db.selectFrom('refunds').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}

export async function findRefundByKeyId(db: DbOrTrx, keyId: string): Promise<RefundRow | undefined> {
  return db.selectFrom('refunds').selectAll().where('idempotency_key_id', '=', keyId).executeTakeFirst();
}

export type RefundUpdate =
  | { status: 'pending' }
  | { status: 'succeeded'; processor_reference: string }
  | { status: 'failed'; processor_reference: string | null; failure_code: string; failure_message: string };

export async function updateRefund(db: DbOrTrx, id: string, update: RefundUpdate): Promise<RefundRow> {
  const reset = { processor_reference: null, failure_code: null, failure_message: null };
  return db
    .updateTable('refunds')
    .set({ ...reset, ...update, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
}
