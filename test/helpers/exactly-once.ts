// What "every charge happened exactly once" means between our database, the processor's ledger and the
// answers clients were given (the checks of test/system/database-outage.test.ts, as reusable pieces that
// return their findings instead of asserting, so a test reports every one of them).
import { sql } from 'kysely';
import type { Db } from '../../src/db/database.ts';
import type { LedgerEntry } from '../../src/simulator/simulator.ts';
import type { ChargeOutcome } from './processes.ts';

export interface ChargeRow {
  id: string;
  status: string;
  processor_idempotency_key: string;
  processor_reference: string | null;
  client_key: string | null;
  recovery_point: string | null;
  locked_at: Date | null;
}

/** The account's charges with their idempotency key. */
export async function chargeRows(db: Db, accountId: string): Promise<ChargeRow[]> {
  return db
    .selectFrom('charges')
    .leftJoin('idempotency_keys', 'idempotency_keys.id', 'charges.idempotency_key_id')
    .select([
      'charges.id',
      'charges.status',
      'charges.processor_idempotency_key',
      'charges.processor_reference',
      'idempotency_keys.key as client_key',
      'idempotency_keys.recovery_point',
      'idempotency_keys.locked_at',
    ])
    .where('charges.account_id', '=', accountId)
    .execute();
}

export interface Finding {
  /** What must hold. */
  check: string;
  /** One line per breach; empty when it holds. */
  problems: string[];
}

const FINAL_STATUS: Record<number, string> = { 201: 'succeeded', 402: 'failed' };

/**
 * Every charge a client was answered (201, 202 or 402 with a charge) is stored exactly once under its key,
 * with the status it was told (202: any); no charge no client asked for; no processor key shared; each
 * succeeded charge has exactly one ledger entry, with its processor key and its reference as id; no ledger
 * charge without a charge row.
 */
export function exactlyOnceFindings(outcomes: ChargeOutcome[], rows: ChargeRow[], ledger: LedgerEntry[]): Finding[] {
  const findings: Finding[] = [];
  const rowsByKey = new Map<string, ChargeRow[]>();
  for (const row of rows) rowsByKey.set(row.client_key ?? '(none)', [...(rowsByKey.get(row.client_key ?? '(none)') ?? []), row]);

  const answered = outcomes.filter((o) => o.final && [201, 202, 402].includes(o.final.status) && typeof o.final.body?.id === 'string');
  const wrong: string[] = [];
  for (const o of answered) {
    const stored = rowsByKey.get(o.key) ?? [];
    const told = o.final!;
    if (stored.length !== 1) wrong.push(`key ${o.key}: answered ${told.status} ${told.body?.id}, ${stored.length} charge rows`);
    else if (stored[0]!.id !== told.body?.id) wrong.push(`key ${o.key}: answered ${told.body?.id}, stored ${stored[0]!.id}`);
    else if (FINAL_STATUS[told.status] && stored[0]!.status !== FINAL_STATUS[told.status]) {
      wrong.push(`key ${o.key}: answered ${told.status} for ${told.body?.id}, which is ${stored[0]!.status} now`);
    }
  }
  findings.push({ check: 'every charge a client was answered exists exactly once, with the status it was told', problems: wrong });

  const sent = new Set(outcomes.map((o) => o.key));
  findings.push({
    check: 'no charge row that no client asked for',
    problems: rows.filter((r) => r.client_key === null || !sent.has(r.client_key)).map((r) => `${r.id} (key ${r.client_key})`),
  });
  const doubled = [...rowsByKey].filter(([, list]) => list.length > 1).map(([key, list]) => `key ${key}: ${list.map((r) => r.id).join(', ')}`);
  findings.push({ check: 'no client key with several charge rows', problems: doubled });

  const byProcessorKey = new Map<string, number>();
  for (const r of rows) byProcessorKey.set(r.processor_idempotency_key, (byProcessorKey.get(r.processor_idempotency_key) ?? 0) + 1);
  findings.push({
    check: 'no processor key shared by several charges',
    problems: [...byProcessorKey].filter(([, n]) => n > 1).map(([k, n]) => `${k} ×${n}`),
  });

  const charges = ledger.filter((e) => e.type === 'charge');
  const unmatched: string[] = [];
  for (const row of rows.filter((r) => r.status === 'succeeded')) {
    const entries = charges.filter((e) => e.idempotency_key === row.processor_idempotency_key);
    if (entries.length !== 1) unmatched.push(`${row.id}: ${entries.length} ledger entries for ${row.processor_idempotency_key}`);
    else if (entries[0]!.id !== row.processor_reference) unmatched.push(`${row.id}: ledger entry ${entries[0]!.id}, processor_reference ${row.processor_reference}`);
  }
  findings.push({ check: 'every succeeded charge has exactly one matching ledger entry', problems: unmatched });

  const doubleCharged = new Map<string, number>();
  for (const e of charges) doubleCharged.set(e.idempotency_key, (doubleCharged.get(e.idempotency_key) ?? 0) + 1);
  findings.push({
    check: 'no processor key charged twice at the processor',
    problems: [...doubleCharged].filter(([, n]) => n > 1).map(([k, n]) => `${k}: ${n} ledger charges`),
  });
  findings.push({
    check: 'every processor charge has a charge row',
    problems: charges.filter((e) => !byProcessorKey.has(e.idempotency_key)).map((e) => `${e.id} (${e.idempotency_key}, ${e.status})`),
  });
  return findings;
}

export interface PendingCharge {
  id: string;
  client_key: string | null;
  recovery_point: string | null;
  locked_at: Date | null;
  /** The charge's live jobs (settle or reconcile, not yet completed/failed/cancelled): `settle created`. */
  jobs: string[];
}

/** The account's pending charges, with the jobs that would settle them. */
export async function pendingCharges(db: Db, accountId: string): Promise<PendingCharge[]> {
  const { rows } = await sql<PendingCharge>`
    select c.id, k.key as client_key, k.recovery_point, k.locked_at,
           coalesce((select array_agg(j.name || ' ' || j.state order by j.created_on)
                       from pgboss.job j
                      where j.singleton_key = 'charge:' || c.id and j.state < 'completed'), '{}') as jobs
      from charges c left join idempotency_keys k on k.id = c.idempotency_key_id
     where c.account_id = ${accountId} and c.status = 'pending'`.execute(db);
  return rows;
}

export interface LockedKey {
  key: string;
  recovery_point: string;
  locked_at: Date;
  /** How long ago, by the database clock. */
  locked_seconds: number;
}

/** The account's idempotency keys that still hold a lease (locked_at set). */
export async function lockedKeys(db: Db, accountId: string): Promise<LockedKey[]> {
  const { rows } = await sql<LockedKey>`
    select key, recovery_point, locked_at, extract(epoch from now() - locked_at)::float8 as locked_seconds
      from idempotency_keys
     where account_id = ${accountId} and locked_at is not null
     order by locked_at`.execute(db);
  return rows;
}
