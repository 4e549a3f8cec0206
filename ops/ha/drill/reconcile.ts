// After the drill: every charge in our database against the processor simulator's ledger, and against
// what each client was finally told. Lost: money moved or promised that our rows do not show (or the
// reverse). Doubled: one client key charged more than once. Plus what must never be left behind: a pending
// charge without a job to settle it, an idempotency key still leased or unfinished.
import pg from 'pg';
import type { LedgerEntry } from '../../../src/simulator/simulator.ts';
import type { LogicalCharge } from './load.ts';

export interface Reconciliation {
  charges: number;
  byStatus: Record<string, number>;
  ledgerCharges: number;
  lost: string[];
  doubled: string[];
  pendingWithoutJob: string[];
  pending: number;
  keysLocked: string[];
  unanswered: string[];
}

interface Row {
  id: string;
  status: string;
  amount: number;
  processor_idempotency_key: string;
  processor_reference: string | null;
  client_key: string | null;
}

export async function reconcile(databaseUrl: string, simulatorUrl: string, logical: LogicalCharge[]): Promise<Reconciliation> {
  const db = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000, query_timeout: 30_000 });
  await db.connect();
  try {
    const rows = (
      await db.query<Row>(`
        select c.id, c.status, c.amount::float8 as amount, c.processor_idempotency_key, c.processor_reference, k.key as client_key
        from charges c left join idempotency_keys k on k.id = c.idempotency_key_id`)
    ).rows;
    const pendingWithoutJob = (
      await db.query<{ id: string }>(`
        select c.id from charges c
        where c.status = 'pending' and not exists (
          select 1 from pgboss.job j where j.singleton_key = 'charge:' || c.id and j.state in ('created', 'retry', 'active'))`)
    ).rows.map((r) => `charge ${r.id} pending without a live job`);
    const keysLocked = (
      await db.query<{ key: string; recovery_point: string; locked_at: Date | null }>(`
        select key, recovery_point, locked_at from idempotency_keys where recovery_point <> 'finished' or locked_at is not null`)
    ).rows.map((k) => `key ${k.key} at ${k.recovery_point}${k.locked_at ? `, leased since ${k.locked_at.toISOString()}` : ''}`);
    const res = await fetch(`${simulatorUrl}/ledger`, { signal: AbortSignal.timeout(10_000) });
    const ledger = ((await res.json()) as { entries: LedgerEntry[] }).entries.filter((e) => e.type === 'charge');

    const lost: string[] = [];
    const doubled: string[] = [];
    const byId = new Map(rows.map((r) => [r.id, r]));
    const byProcessorKey = new Map(rows.map((r) => [r.processor_idempotency_key, r]));
    const rowsByClientKey = new Map<string, Row[]>();
    for (const r of rows) if (r.client_key) rowsByClientKey.set(r.client_key, [...(rowsByClientKey.get(r.client_key) ?? []), r]);
    for (const [key, list] of rowsByClientKey) if (list.length > 1) doubled.push(`client key ${key}: ${list.length} charges (${list.map((r) => r.id).join(', ')})`);

    const entriesByKey = new Map<string, LedgerEntry[]>();
    for (const e of ledger) entriesByKey.set(e.idempotency_key, [...(entriesByKey.get(e.idempotency_key) ?? []), e]);
    for (const [key, entries] of entriesByKey) {
      const row = byProcessorKey.get(key);
      const charged = entries.filter((e) => e.status === 'succeeded');
      if (charged.length > 1) doubled.push(`processor key ${key}: charged ${charged.length} times`);
      if (!row) {
        if (charged.length) doubled.push(`processor charged ${charged.map((e) => e.id).join(', ')} under key ${key}, which no charge of ours holds`);
        continue;
      }
      if (charged.length && row.status !== 'succeeded') lost.push(`charge ${row.id} is ${row.status} but the processor charged it (${charged[0]!.id})`);
      if (charged.length && row.status === 'succeeded' && row.processor_reference !== charged[0]!.id) lost.push(`charge ${row.id} references ${row.processor_reference}, the processor says ${charged[0]!.id}`);
    }
    for (const r of rows) {
      if (r.status === 'succeeded' && !(entriesByKey.get(r.processor_idempotency_key) ?? []).some((e) => e.status === 'succeeded')) {
        lost.push(`charge ${r.id} is succeeded here, but the processor holds no charge for it`);
      }
    }
    // What each client was finally told must be what the rows say now.
    const unanswered: string[] = [];
    for (const c of logical) {
      if (c.final === undefined) {
        unanswered.push(`${c.key}: ${c.gaveUp ?? 'still in flight at the end'}`);
        continue;
      }
      const row = c.id ? byId.get(c.id) : rowsByClientKey.get(c.key)?.[0];
      if (!row) {
        if (c.final === 201 || c.final === 202 || c.final === 402) lost.push(`${c.key}: told ${c.final} ${c.id ?? ''}, no such charge`);
        continue;
      }
      if (row.client_key !== c.key) lost.push(`${c.key}: told ${c.id}, which belongs to key ${row.client_key}`);
      if (c.final === 201 && row.status !== 'succeeded') lost.push(`${c.key}: told 201, charge ${row.id} is ${row.status}`);
      if (c.final === 402 && row.status !== 'failed') lost.push(`${c.key}: told 402, charge ${row.id} is ${row.status}`);
    }
    const byStatus: Record<string, number> = {};
    for (const r of rows) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    return {
      charges: rows.length,
      byStatus,
      ledgerCharges: ledger.filter((e) => e.status === 'succeeded').length,
      lost,
      doubled,
      pendingWithoutJob,
      pending: byStatus.pending ?? 0,
      keysLocked,
      unanswered,
    };
  } finally {
    await db.end().catch(() => undefined);
  }
}

/** Charges still pending (the workers settle them after the load). */
export async function pendingCount(databaseUrl: string): Promise<number> {
  const db = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 2000, query_timeout: 5000 });
  db.on('error', () => undefined);
  try {
    await db.connect();
    return Number((await db.query<{ n: string }>(`select count(*) as n from charges where status = 'pending'`)).rows[0]!.n);
  } finally {
    await db.end().catch(() => undefined);
  }
}
