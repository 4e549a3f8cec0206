// Queries that charges and refunds share: their rows have the same life (pending → succeeded | failed),
// so one set of statements serves both tables. Every time comparison uses the database clock.
import { type RawBuilder, type Selectable, sql } from 'kysely';
import { cte } from '../db/ctes.ts';
import type { DbOrTrx } from '../db/database.ts';
import type { Changes } from '../idempotency/idempotency.repository.ts';
import { JOB_SCHEMA, RECONCILE_QUEUE, SETTLE_QUEUE } from '../db/job-queue.ts';
import type { ChargesTable, RefundsTable } from '../db/schema.ts';

export type PaymentTable = 'charges' | 'refunds';
export type PaymentRow = Selectable<ChargesTable> | Selectable<RefundsTable>;

/** A payment with what the database clock says about its age. */
export type PaymentState<Row> = Row & {
  /**
   * Near or past the processor's key retention: by the time a request sent now arrives, the processor may
   * have forgotten our key. Judged with a margin (`lookUpMarginSeconds`) for the send's own travel time
   * and for clock skew between the database and the processor.
   */
  past_retention: boolean;
  /** Older than the settle window: no new request may be sent for it, only questions. */
  window_over: boolean;
};

/** What a payment's age means: the settings findPaymentState judges it by, with the database clock. */
export interface PaymentAges {
  keyRetentionSeconds: number;
  /** How long before the processor's retention ends a payment is looked up rather than resent. */
  lookUpMarginSeconds: number;
  settleWindowSeconds: number;
}

/**
 * Either table, typed as `charges` for Kysely: the columns these statements use are the same in both, and
 * one table's type lets Kysely check them.
 */
const paymentsIn = (table: PaymentTable) => table as 'charges';

export async function findPaymentState<Row extends PaymentRow>(
  db: DbOrTrx,
  table: PaymentTable,
  by: { id: string } | { keyId: string },
  ages: PaymentAges,
): Promise<PaymentState<Row> | undefined> {
  const row = await db
    .selectFrom(paymentsIn(table))
    .selectAll()
    .select([
      sql<boolean>`created_at <= now() - make_interval(secs => ${ages.keyRetentionSeconds - ages.lookUpMarginSeconds})`.as(
        'past_retention',
      ),
      sql<boolean>`created_at <= now() - make_interval(secs => ${ages.settleWindowSeconds})`.as('window_over'),
    ])
    .where('id' in by ? 'id' : 'idempotency_key_id', '=', 'id' in by ? by.id : by.keyId)
    .executeTakeFirst();
  return row as PaymentState<Row> | undefined;
}

export async function lockPayment<Row extends PaymentRow>(db: DbOrTrx, table: PaymentTable, id: string): Promise<Row> {
  const row = await db.selectFrom(paymentsIn(table)).selectAll().where('id', '=', id).forUpdate().executeTakeFirstOrThrow();
  return row as Row;
}

export type Final =
  | { status: 'succeeded'; processor_reference: string; failure_code: null; failure_message: null }
  | { status: 'failed'; processor_reference: string | null; failure_code: string; failure_message: string };

/**
 * Makes a pending payment final and returns it as it now is; undefined when it is not pending any more,
 * or when another payment of the table already holds the processor's reference (never a constraint
 * error: the caller decides what such an anomaly means). A final status never changes again.
 */
export async function finishPayment<Row extends PaymentRow>(
  db: DbOrTrx,
  table: PaymentTable,
  id: string,
  final: Final,
): Promise<Row | undefined> {
  let update = db
    .updateTable(paymentsIn(table))
    .set({ ...final, reconcile_since: null, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('status', '=', 'pending');
  if (final.processor_reference) {
    const reference = final.processor_reference;
    update = update.where(({ not, exists, selectFrom }) =>
      not(exists(selectFrom(`${paymentsIn(table)} as other`).select('other.id').where('other.processor_reference', '=', reference).where('other.id', '<>', id))),
    );
  }
  return (await update.returningAll().executeTakeFirst()) as Row | undefined;
}

// The table names as they are written, once: kysely would parse them again on every compile.
const TABLE: Record<PaymentTable, RawBuilder<unknown>> = { charges: sql.raw('charges'), refunds: sql.raw('refunds') };

/**
 * finishPayment as the `change` of a request's finish in one statement (see Changes): changes the payment
 * only while the request holds its key's lease, and returns its id when it did.
 */
export function finishPaymentChange(table: PaymentTable, id: string, final: Final): Changes {
  const reference = final.processor_reference;
  const referenceFree = reference
    ? sql`and not exists (select 1 from ${TABLE[table]} other where other.processor_reference = ${reference} and other.id <> ${id})`
    : sql``;
  return cte('change', ['lease'], (ref) => sql`
    update ${TABLE[table]}
    set status = ${final.status}, processor_reference = ${reference}, failure_code = ${final.failure_code},
        failure_message = ${final.failure_message}, reconcile_since = null, updated_at = now()
    where id = ${id} and status = 'pending' and exists (select 1 from ${ref('lease')}) ${referenceFree}
    returning id`);
}

const TIMESTAMPS = ['created_at', 'updated_at', 'reconcile_since'] as const;

/** A payment row as a statement returned it through row_to_json: its timestamps back to Dates. */
export function paymentFromJson<Row extends PaymentRow>(json: unknown): Row {
  const row = { ...(json as Record<string, unknown>) };
  for (const column of TIMESTAMPS) {
    if (typeof row[column] === 'string') row[column] = new Date(row[column]);
  }
  return row as Row;
}

/** Flags a pending payment for reconciliation (once: the first flag's time is kept). */
export async function flagForReconciliation(db: DbOrTrx, table: PaymentTable, id: string): Promise<void> {
  await db
    .updateTable(paymentsIn(table))
    .set({ reconcile_since: sql<Date>`coalesce(reconcile_since, now())`, updated_at: sql<Date>`now()` })
    .where('id', '=', id)
    .where('status', '=', 'pending')
    .execute();
}

/**
 * What the pending payments look like from outside: how many wait for reconciliation (past their settle
 * window, the processor not asked yet), and the age of the oldest pending one (0 when none is pending).
 */
export async function pendingPaymentsSummary(db: DbOrTrx): Promise<{ awaitingReconciliation: number; oldestPendingSeconds: number }> {
  const { rows } = await sql<{ awaiting: string; oldest: string | null }>`
    select (select count(*) from charges where status = 'pending' and reconcile_since is not null)
         + (select count(*) from refunds where status = 'pending' and reconcile_since is not null) as awaiting,
           extract(epoch from now() - least(
             (select min(created_at) from charges where status = 'pending'),
             (select min(created_at) from refunds where status = 'pending'))) as oldest`.execute(db);
  return { awaitingReconciliation: Number(rows[0]?.awaiting ?? 0), oldestPendingSeconds: Math.max(0, Number(rows[0]?.oldest ?? 0)) };
}

/**
 * Pending payments nothing drives: their request finished (so neither a client's retry nor the completer
 * will touch them) and they have no live settle or reconcile job (it was dead-lettered, lost with a
 * worker, deleted by hand). A request commits its 202 and its job together, so no grace period is needed.
 */
export async function findDriverlessPayments(
  db: DbOrTrx,
  options: { limit: number },
): Promise<{ kind: 'charge' | 'refund'; id: string; reconcile: boolean }[]> {
  const { rows } = await sql<{ kind: 'charge' | 'refund'; id: string; reconcile: boolean }>`
    select p.kind, p.id, p.reconcile from (
      select 'charge' as kind, id, idempotency_key_id, reconcile_since is not null as reconcile, created_at
      from charges where status = 'pending'
      union all
      select 'refund', id, idempotency_key_id, reconcile_since is not null, created_at
      from refunds where status = 'pending'
    ) p
    where not exists (
        select 1 from idempotency_keys k where k.id = p.idempotency_key_id and k.recovery_point <> 'finished')
      and not exists (
        select 1 from ${sql.table(`${JOB_SCHEMA}.job`)} j
        where j.name in (${SETTLE_QUEUE}, ${RECONCILE_QUEUE})
          and j.singleton_key = p.kind || ':' || p.id
          and j.state < 'completed')
    order by p.created_at
    limit ${options.limit}`.execute(db);
  return rows;
}
