import { type Selectable, sql } from 'kysely';
import type { DbOrTrx } from '../db/database.ts';
import type { ChargesTable } from '../db/schema.ts';

export type ChargeRow = Selectable<ChargesTable>;

export async function findCharge(db: DbOrTrx, accountId: string, id: string): Promise<ChargeRow | undefined> {
  return db
    .selectFrom('charges')
    .selectAll()
    .where('account_id', '=', accountId)
    .where('id', '=', id)
    .executeTakeFirst();
}

/**
 * Newest first, starting after the charge `afterId`. The cursor row is read inside the query: created_at
 * has microseconds that a JavaScript Date would round away.
 */
export async function listCharges(db: DbOrTrx, accountId: string, limit: number, afterId?: string): Promise<ChargeRow[]> {
  let query = db
    .selectFrom('charges')
    .selectAll()
    .where('account_id', '=', accountId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit);
  if (afterId) {
    query = query.where(
      sql<boolean>`(created_at, id) < (select c.created_at, c.id from charges c where c.id = ${afterId})`,
    );
  }
  return query.execute();
}
