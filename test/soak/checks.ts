// The soak's invariants: what must hold between the database, the processor's ledger, and every answer a
// client received, once everything is healed and settled. Pure functions of what the soak collected.
import type { LedgerEntry, VoidedKey } from '../../src/simulator/simulator.ts';

/** What a client was finally told by one logical call. */
export type Outcome =
  /** A payment: 201 succeeded, 202 pending, or 402 with the failed payment. */
  | { kind: 'payment'; id: string; status: string; http: 201 | 202 | 402; code?: string }
  /** A PaymentsError without a payment: status 0 means no answer at all. */
  | { kind: 'error'; http: number; code?: string; requestId?: string; message: string; attempts?: number }
  /** A read that got its answer. */
  | { kind: 'read' }
  /** The client threw something that is not a PaymentsError. */
  | { kind: 'exception'; message: string };

export type CallOp =
  | 'charge'
  | 'charge_dup'
  | 'charge_replay'
  | 'refund'
  | 'refund_replay'
  | 'recovery'
  | 'retrieve'
  | 'retrieve_refund'
  | 'list'
  | 'list_all'
  | 'wait_for';

export interface CallRecord {
  seq: number;
  op: CallOp;
  kind: 'charge' | 'refund' | 'read';
  /** Which api copy it was sent to (0 or 1). */
  api: number;
  key?: string;
  body?: Record<string, unknown>;
  startedAt: number;
  endedAt: number;
  outcome: Outcome;
  /** The deadline the client was given for this call (its deadlineMs, or waitFor's timeoutMs). */
  limitMs?: number;
  /** The call this one repeats (a replay, a concurrent duplicate, a recovery retry). */
  replayOf?: number;
}

/** A payment's status as some answer showed it (a create, a retrieve, a list, waitFor). */
export interface Observation {
  kind: 'charge' | 'refund';
  id: string;
  status: string;
  at: number;
  via: string;
}

export interface ChargeRowX {
  id: string;
  status: string;
  amount: number;
  amount_refunded: number;
  failure_code: string | null;
  processor_idempotency_key: string;
  processor_reference: string | null;
  reconcile_since: Date | null;
  client_key: string | null;
}

export interface RefundRowX {
  id: string;
  charge_id: string;
  status: string;
  amount: number;
  failure_code: string | null;
  processor_idempotency_key: string;
  processor_reference: string | null;
  reconcile_since: Date | null;
  client_key: string | null;
}

export interface KeyRowX {
  id: string;
  key: string;
  request_path: string;
  recovery_point: string;
  response_status: number | null;
  locked_at: Date | null;
  created_at: Date;
  last_run_at: Date;
  lease_expired: boolean;
  older_than_lease: boolean;
}

export interface InvariantResult {
  id: number;
  name: string;
  pass: boolean;
  /** One line per breach (at most MAX_DETAILS, then a count of the rest). */
  details: string[];
  /** What was checked, for the PASS line. */
  info?: string;
  /** Reported, never a failure. */
  informational?: boolean;
}

export interface CheckInput {
  calls: CallRecord[];
  observations: Observation[];
  charges: ChargeRowX[];
  refunds: RefundRowX[];
  keys: KeyRowX[];
  ledger: LedgerEntry[];
  voided: VoidedKey[];
  processes: { unexpectedExits: string[]; sigtermProblems: string[]; deadAtEnd: string[] };
  attemptsByKey: Map<string, AttemptRecord[]>;
  /** Every HTTP attempt the clients reported, and the per-attempt timeout they were given. */
  attempts: AttemptRecord[];
  attemptTimeoutMs: number;
  /** Queue jobs still `active` long after any handler could be running, by their payment (`charge:ch_…`). */
  orphans: Map<string, OrphanJob>;
  /** The account's events, and what the soak's webhook receiver made of their deliveries. */
  webhooks: WebhookObservation;
}

export interface WebhookObservation {
  events: { id: string; type: string; object_id: string }[];
  /** Deliveries by status at the end. */
  deliveries: Record<string, number>;
  /** webhook-ids the receiver verified and accepted (each once). */
  accepted: Set<string>;
  /** Requests the receiver got, those it answered with an error on purpose, and verified repeats of an accepted id. */
  received: number;
  refusedOnPurpose: number;
  duplicates: number;
  unverified: string[];
}

export interface OrphanJob {
  id: string;
  queue: string;
  startedOn: Date;
  /** When pg-boss's expiry will hand it to another worker (started_on + expire_seconds). */
  expiresOn: Date;
  /** What the soak's logs say became of its handler. */
  cause?: string;
}

export interface AttemptRecord {
  api: number;
  method: string;
  path: string;
  attempt: number;
  status: number;
  code?: string;
  ms: number;
  idempotencyKey?: string;
}

/** Timers and a loaded machine (two CPUs, four service processes, Postgres) may run a little late. */
const BOUND_SLACK_MS = 1500;

const MAX_DETAILS = 40;

function result(id: number, name: string, details: string[], info: string): InvariantResult {
  const shown = details.length > MAX_DETAILS ? [...details.slice(0, MAX_DETAILS), `... and ${details.length - MAX_DETAILS} more`] : details;
  return { id, name, pass: details.length === 0, details: shown, info };
}

/** Answers a client may get that say "unknown, retry with the same key". */
export function isUnknown(o: Outcome): boolean {
  if (o.kind === 'exception') return true;
  if (o.kind !== 'error') return false;
  return o.http === 0 || o.http >= 500 || o.http === 429 || (o.http === 409 && o.code === 'idempotency_key_in_use');
}

/** Business refusals of a refund: stored as the key's answer, no refund made. */
const REFUND_REFUSALS = new Set(['charge_not_refundable', 'refund_exceeds_charge']);

function describeCall(c: CallRecord, attempts?: CheckInput['attemptsByKey']): string {
  const o = c.outcome;
  const told =
    o.kind === 'payment'
      ? `${o.http} ${o.id} ${o.status}${o.code ? ` (${o.code})` : ''}`
      : o.kind === 'error'
        ? `${o.http} ${o.code ?? ''}${o.requestId ? ` request ${o.requestId}` : ''}`
        : o.kind === 'exception'
          ? `exception ${o.message}`
          : 'read ok';
  const tries = c.key && attempts?.get(c.key);
  const trail = tries ? `; attempts for the key: ${tries.map((a) => `api#${a.api}:${a.status}${a.code ? `/${a.code}` : ''}`).join(' ')}` : '';
  return `${c.op} #${c.seq} key ${c.key ?? '-'} at api#${c.api}: told ${told}${trail}`;
}

export function checkInvariants(input: CheckInput): InvariantResult[] {
  const { calls, observations, charges, refunds, keys, ledger, voided, processes, attemptsByKey } = input;
  const results: InvariantResult[] = [];
  const ledgerByKey = new Map<string, LedgerEntry[]>();
  for (const e of ledger) {
    const k = `${e.type}:${e.idempotency_key}`;
    ledgerByKey.set(k, [...(ledgerByKey.get(k) ?? []), e]);
  }
  const chargesById = new Map(charges.map((c) => [c.id, c]));
  const refundsById = new Map(refunds.map((r) => [r.id, r]));
  const chargeByClientKey = new Map(charges.filter((c) => c.client_key).map((c) => [c.client_key!, c]));
  const refundByClientKey = new Map(refunds.filter((r) => r.client_key).map((r) => [r.client_key!, r]));
  const voidedKeys = new Set(voided.map((v) => `${v.type}:${v.idempotency_key}`));

  // (1) every succeeded payment is in the ledger exactly once, same amount, its reference the entry's id.
  {
    const bad: string[] = [];
    const one = (type: 'charge' | 'refund', row: ChargeRowX | RefundRowX) => {
      const entries = ledgerByKey.get(`${type}:${row.processor_idempotency_key}`) ?? [];
      if (entries.length !== 1) {
        bad.push(`${type} ${row.id} succeeded: ${entries.length} ledger entries for its processor key ${row.processor_idempotency_key} (${entries.map((e) => `${e.id} ${e.status}`).join(', ')})`);
        return undefined;
      }
      const e = entries[0]!;
      if (e.status !== 'succeeded') bad.push(`${type} ${row.id} succeeded but its ledger entry ${e.id} is ${e.status}`);
      if (e.amount !== row.amount) bad.push(`${type} ${row.id}: amount ${row.amount}, ledger entry ${e.id} amount ${e.amount}`);
      if (e.id !== row.processor_reference) bad.push(`${type} ${row.id}: processor_reference ${row.processor_reference}, ledger entry ${e.id}`);
      return e;
    };
    const sc = charges.filter((c) => c.status === 'succeeded');
    const sr = refunds.filter((r) => r.status === 'succeeded');
    for (const c of sc) one('charge', c);
    for (const r of sr) {
      const e = one('refund', r);
      const parent = chargesById.get(r.charge_id);
      if (e && parent && e.charge !== parent.processor_reference) {
        bad.push(`refund ${r.id}: ledger entry ${e.id} refunds ${e.charge}, but its charge ${parent.id} has reference ${parent.processor_reference}`);
      }
    }
    results.push(result(1, 'every succeeded charge and refund is in the processor ledger exactly once, same amount, processor_reference = entry id', bad, `${sc.length} succeeded charges, ${sr.length} succeeded refunds`));
  }

  // (2) the ledger holds nothing we do not know, and no row exists that no client asked for.
  {
    const bad: string[] = [];
    const chargeKeys = new Set(charges.map((c) => c.processor_idempotency_key));
    const refundKeys = new Set(refunds.map((r) => r.processor_idempotency_key));
    for (const e of ledger) {
      const known = e.type === 'charge' ? chargeKeys.has(e.idempotency_key) : refundKeys.has(e.idempotency_key);
      if (!known) bad.push(`ledger ${e.type} ${e.id} (${e.status}, ${e.amount}) under key ${e.idempotency_key}: no ${e.type} row has that processor key`);
    }
    const sent = new Set(calls.filter((c) => c.key).map((c) => c.key!));
    for (const c of charges) if (!c.client_key || !sent.has(c.client_key)) bad.push(`charge ${c.id} has key ${c.client_key}, which no client sent`);
    for (const r of refunds) if (!r.client_key || !sent.has(r.client_key)) bad.push(`refund ${r.id} has key ${r.client_key}, which no client sent`);
    results.push(result(2, 'the processor ledger holds nothing we do not know (and no row nobody asked for)', bad, `${ledger.length} ledger entries, ${charges.length + refunds.length} rows`));
  }

  // (3) no failed payment has a succeeded ledger entry; a voided key's payment is failed.
  {
    const bad: string[] = [];
    const failed = [...charges.map((c) => ['charge', c] as const), ...refunds.map((r) => ['refund', r] as const)].filter(([, r]) => r.status === 'failed');
    for (const [type, row] of failed) {
      const wrong = (ledgerByKey.get(`${type}:${row.processor_idempotency_key}`) ?? []).filter((e) => e.status === 'succeeded');
      for (const e of wrong) bad.push(`${type} ${row.id} is failed (${row.failure_code}) but the processor ${type === 'charge' ? 'charged' : 'refunded'} it: ledger ${e.id} amount ${e.amount}`);
      if (row.failure_code === 'processor_unavailable' && !voidedKeys.has(`${type}:${row.processor_idempotency_key}`)) {
        bad.push(`${type} ${row.id} is failed processor_unavailable but its key was never voided at the processor`);
      }
    }
    for (const v of voided) {
      const row = v.type === 'charge' ? charges.find((c) => c.processor_idempotency_key === v.idempotency_key) : refunds.find((r) => r.processor_idempotency_key === v.idempotency_key);
      // A pending one is not final yet (see 5); a succeeded one would contradict the processor.
      if (row?.status === 'succeeded') bad.push(`${v.type} ${row.id} is succeeded but its processor key was voided`);
    }
    results.push(result(3, 'no failed payment has a succeeded ledger entry (and no succeeded one a voided key)', bad, `${failed.length} failed payments, ${voided.length} voided keys`));
  }

  // (4) every answer a client received agrees with the final state.
  {
    const bad: string[] = [];
    const creates = calls.filter((c) => c.kind !== 'read');
    for (const c of creates) {
      const row = c.kind === 'charge' ? chargeByClientKey.get(c.key!) : refundByClientKey.get(c.key!);
      const o = c.outcome;
      if (o.kind === 'exception') {
        bad.push(`${describeCall(c, attemptsByKey)}: the client threw something other than a PaymentsError`);
      } else if (o.kind === 'payment') {
        if (!row) bad.push(`${describeCall(c, attemptsByKey)}: no ${c.kind} row under that key`);
        else if (row.id !== o.id) bad.push(`${describeCall(c, attemptsByKey)}: the row under that key is ${row.id}`);
        else if (o.http === 201 && row.status !== 'succeeded') bad.push(`${describeCall(c, attemptsByKey)}: told succeeded, now ${row.status}`);
        else if (o.http === 402 && row.status !== 'failed') bad.push(`${describeCall(c, attemptsByKey)}: told failed (402), now ${row.status}`);
        else if (o.http === 402 && o.code && row.failure_code !== o.code) bad.push(`${describeCall(c, attemptsByKey)}: told ${o.code}, row says ${row.failure_code}`);
        else if (o.http === 202 && row.status === 'pending' && !row.reconcile_since) bad.push(`${describeCall(c, attemptsByKey)}: told pending, still pending and not flagged`);
      } else if (o.kind === 'error' && !isUnknown(o)) {
        const refusal = c.kind === 'refund' && o.http === 409 && o.code !== undefined && REFUND_REFUSALS.has(o.code);
        if (!refusal) bad.push(`${describeCall(c, attemptsByKey)}: an answer the contract does not allow here`);
        else if (row) bad.push(`${describeCall(c, attemptsByKey)}: refused, yet refund ${row.id} (${row.status}) exists under that key`);
      }
    }
    // Every call with the same key was told the same thing: one payment id, or one refusal.
    const byKey = new Map<string, CallRecord[]>();
    for (const c of creates) byKey.set(c.key!, [...(byKey.get(c.key!) ?? []), c]);
    let replays = 0;
    for (const [key, list] of byKey) {
      if (list.length > 1) replays += list.length - 1;
      const ids = new Set(list.flatMap((c) => (c.outcome.kind === 'payment' ? [c.outcome.id] : [])));
      const refusals = new Set(list.flatMap((c) => (c.outcome.kind === 'error' && !isUnknown(c.outcome) ? [`${c.outcome.http} ${c.outcome.code}`] : [])));
      if (ids.size > 1 || (ids.size && refusals.size) || refusals.size > 1) {
        bad.push(`key ${key}: different answers to the same key: ${list.map((c) => describeCall(c)).join(' | ')}`);
      }
    }
    // Every final status a read showed is the final status now (a final status never changes).
    let finals = 0;
    for (const ob of observations) {
      const row = ob.kind === 'charge' ? chargesById.get(ob.id) : refundsById.get(ob.id);
      if (!row) {
        bad.push(`${ob.via} showed ${ob.kind} ${ob.id} (${ob.status}), which has no row`);
        continue;
      }
      if (ob.status === 'pending') continue;
      finals += 1;
      if (row.status !== ob.status) bad.push(`${ob.via} showed ${ob.kind} ${ob.id} ${ob.status}, now ${row.status}`);
    }
    for (const c of calls.filter((x) => x.kind === 'read')) {
      const o = c.outcome;
      if (o.kind === 'exception' && !(c.op === 'wait_for' && /time/i.test(o.message))) bad.push(`${describeCall(c)}: the client threw something other than a PaymentsError`);
      if (o.kind === 'error' && !isUnknown(o) && !(c.op === 'wait_for' && o.code === 'timeout')) bad.push(`${describeCall(c)}: a read answered an error the contract does not allow`);
    }
    results.push(
      result(4, 'every answer a client received agrees with the final state (201 succeeded, 402 failed, 202 now final, replays the same id)', bad, `${creates.length} create calls over ${byKey.size} keys (${replays} replays/duplicates/recoveries), ${observations.length} observed statuses (${finals} final)`),
    );
  }

  // (5) nothing pending.
  {
    const bad: string[] = [];
    const driver = (kind: string, id: string) => {
      const o = input.orphans.get(`${kind}:${id}`);
      return o
        ? `; its ${o.queue} job ${o.id} has been 'active' since ${o.startedOn.toISOString()} with no handler running it (pg-boss expiry hands it over only at ${o.expiresOn.toISOString()}, plus up to a supervise interval): ${o.cause ?? 'cause unknown'}`
        : '';
    };
    /** What the processor already holds for a payment we still call pending. */
    const atProcessor = (type: 'charge' | 'refund', key: string) => {
      const entries = ledgerByKey.get(`${type}:${key}`) ?? [];
      if (entries.length) return ` [the processor already answered it: ${entries.map((e) => `${e.id} ${e.status}${e.status === 'succeeded' ? ` (the money has moved: ${e.amount})` : ''}`).join(', ')}]`;
      return voidedKeys.has(`${type}:${key}`) ? ' [its key is already voided at the processor: it will fail]' : ' [the processor holds nothing for it]';
    };
    for (const c of charges.filter((x) => x.status === 'pending')) {
      bad.push(`charge ${c.id} pending${c.reconcile_since ? `, flagged for reconciliation since ${c.reconcile_since.toISOString()}` : ''} (key ${c.client_key}) although the processor is healthy${atProcessor('charge', c.processor_idempotency_key)}${driver('charge', c.id)}`);
    }
    for (const r of refunds.filter((x) => x.status === 'pending')) {
      bad.push(`refund ${r.id} pending${r.reconcile_since ? `, flagged for reconciliation since ${r.reconcile_since.toISOString()}` : ''} (key ${r.client_key}) although the processor is healthy${atProcessor('refund', r.processor_idempotency_key)}${driver('refund', r.id)}`);
    }
    results.push(result(5, 'no payment left pending (the processor was healed, so none may stay flagged either)', bad, `${charges.length} charges, ${refunds.length} refunds final`));
  }

  // (6) no key left leased or stuck at intent_recorded.
  {
    const bad: string[] = [];
    for (const k of keys) {
      if (k.recovery_point !== 'finished' && k.lease_expired) bad.push(`key ${k.key} (${k.request_path}) unfinished with a lease taken ${k.locked_at?.toISOString()}, older than the lease`);
      else if (k.recovery_point === 'intent_recorded' && k.older_than_lease) bad.push(`key ${k.key} (${k.request_path}) still at intent_recorded since ${k.created_at.toISOString()}`);
    }
    results.push(result(6, 'no idempotency key left leased or at intent_recorded past the lease', bad, `${keys.length} keys`));
  }

  // (7) amount_refunded is what the succeeded and pending refunds hold.
  {
    const bad: string[] = [];
    const held = new Map<string, number>();
    for (const r of refunds) if (r.status === 'succeeded' || r.status === 'pending') held.set(r.charge_id, (held.get(r.charge_id) ?? 0) + r.amount);
    for (const c of charges) {
      const sum = held.get(c.id) ?? 0;
      if (c.amount_refunded !== sum) bad.push(`charge ${c.id}: amount_refunded ${c.amount_refunded}, succeeded+pending refunds sum ${sum}`);
      if (c.amount_refunded > c.amount) bad.push(`charge ${c.id}: amount_refunded ${c.amount_refunded} > amount ${c.amount}`);
    }
    const refundedCharges = new Set(refunds.map((r) => r.charge_id)).size;
    results.push(result(7, "every charge's amount_refunded equals the sum of its succeeded and pending refunds", bad, `${refundedCharges} charges with refunds`));
  }

  // (8) no process exited that the soak did not stop.
  {
    const bad = [
      ...processes.unexpectedExits,
      ...processes.sigtermProblems,
      ...processes.deadAtEnd.map((n) => `${n} not running at the end`),
    ];
    results.push(result(8, 'no process exited unexpectedly (SIGTERM: a clean exit 0 within the grace)', bad, 'the killed and SIGTERMed excepted'));
  }

  // (11) every state change is one event, and every event reached the receiver at least once, verified.
  {
    const bad: string[] = [];
    const { webhooks } = input;
    const finalEvents = new Map<string, string[]>();
    for (const e of webhooks.events) {
      if (!/\.(succeeded|failed)$/.test(e.type)) continue;
      finalEvents.set(e.object_id, [...(finalEvents.get(e.object_id) ?? []), e.type]);
    }
    const oneFinalEvent = (kind: 'charge' | 'refund', row: { id: string; status: string }) => {
      const types = finalEvents.get(row.id) ?? [];
      const expected = row.status === 'pending' ? [] : [`${kind}.${row.status}`];
      if (types.join() !== expected.join()) bad.push(`${kind} ${row.id} is ${row.status}, its final events: ${types.join(', ') || 'none'}`);
    };
    for (const c of charges) oneFinalEvent('charge', c);
    for (const r of refunds) oneFinalEvent('refund', r);
    // A charge's refunded amount: one charge.refunded per refund that held an amount on it (every refund
    // row), one charge.updated per failed refund that gave it back.
    const chargeChanges = new Map<string, { refunded: number; updated: number }>();
    for (const e of webhooks.events) {
      if (e.type !== 'charge.refunded' && e.type !== 'charge.updated') continue;
      const counts = chargeChanges.get(e.object_id) ?? { refunded: 0, updated: 0 };
      counts[e.type === 'charge.refunded' ? 'refunded' : 'updated'] += 1;
      chargeChanges.set(e.object_id, counts);
    }
    const expectedChanges = new Map<string, { refunded: number; updated: number }>();
    for (const r of refunds) {
      const counts = expectedChanges.get(r.charge_id) ?? { refunded: 0, updated: 0 };
      counts.refunded += 1;
      if (r.status === 'failed') counts.updated += 1;
      expectedChanges.set(r.charge_id, counts);
    }
    for (const c of charges) {
      const found = chargeChanges.get(c.id) ?? { refunded: 0, updated: 0 };
      const expected = expectedChanges.get(c.id) ?? { refunded: 0, updated: 0 };
      if (found.refunded !== expected.refunded || found.updated !== expected.updated) {
        bad.push(`charge ${c.id}: ${found.refunded} charge.refunded and ${found.updated} charge.updated events, for ${expected.refunded} refunds of which ${expected.updated} failed`);
      }
    }
    const eventIds = new Set(webhooks.events.map((e) => e.id));
    for (const e of webhooks.events) if (!webhooks.accepted.has(e.id)) bad.push(`event ${e.id} (${e.type} of ${e.object_id}) never reached the receiver`);
    for (const id of webhooks.accepted) if (!eventIds.has(id)) bad.push(`the receiver accepted ${id}, which is no event of this account`);
    for (const id of webhooks.unverified) bad.push(`a delivery of ${id} did not verify`);
    if (webhooks.deliveries.pending || webhooks.deliveries.failed) bad.push(`deliveries left: ${JSON.stringify(webhooks.deliveries)}`);
    results.push(
      result(
        11,
        'every state change is one event, and every event was delivered at least once, verified (webhook receiver)',
        bad,
        `${webhooks.events.length} events, ${webhooks.accepted.size} accepted by the receiver; ${webhooks.received} requests, ${webhooks.refusedOnPurpose} refused on purpose, ${webhooks.duplicates} repeats deduplicated; deliveries ${JSON.stringify(webhooks.deliveries)}`,
      ),
    );
  }

  // (10) the client SDK kept its own bounds: an attempt ends by its timeout, a call by its deadline.
  {
    const bad: string[] = [];
    const { attempts, attemptTimeoutMs } = input;
    for (const a of attempts) {
      if (a.ms > attemptTimeoutMs + BOUND_SLACK_MS) {
        bad.push(`${a.method} ${a.path} attempt ${a.attempt} at api#${a.api}${a.idempotencyKey ? ` key ${a.idempotencyKey}` : ''} took ${a.ms} ms (timeoutMs ${attemptTimeoutMs}), answer ${a.status}${a.code ? ` ${a.code}` : ''}`);
      }
    }
    for (const c of calls) {
      const took = c.endedAt - c.startedAt;
      if (c.limitMs && took > c.limitMs + BOUND_SLACK_MS) bad.push(`${describeCall(c)}: the call took ${took} ms (deadline ${c.limitMs} ms)`);
    }
    const slowest = attempts.reduce((m, a) => Math.max(m, a.ms), 0);
    const slowestCall = calls.reduce((m, c) => Math.max(m, c.endedAt - c.startedAt), 0);
    results.push(
      result(10, 'the client SDK kept its bounds (no attempt past timeoutMs, no call past its deadline)', bad, `slowest attempt ${slowest} ms (timeoutMs ${attemptTimeoutMs}), slowest call ${slowestCall} ms`),
    );
  }
  return results;
}

/** One service process's log, for attributing what became of a job. */
export interface ProcessLog {
  name: string;
  pid: number;
  lines: Record<string, unknown>[];
  exit?: { code: number | null; signal: string | null };
}

export interface Kill {
  at: number;
  name: string;
  pid: number;
  signal: string;
}

export interface FaultWindow {
  kind: string;
  from: number;
  to: number;
}

/**
 * Why nothing runs a job left `active`: which process ran its current claim and what pg-boss said right
 * after (it could not record the job's end), or the worker that died holding it, or a claim that
 * committed while the database was cutting connections so that no worker ever received it. Only log
 * lines from the current claim on count (`started_on`): earlier attempts of the job ended normally.
 */
export function orphanCause(
  job: { id: string; queue: string; startedOn: Date },
  ctx: { processes: ProcessLog[]; kills: Kill[]; dbFaults: FaultWindow[]; handlerBoundMs: number; at: (t: number) => string },
): { text: string; process?: ProcessLog; lastAt?: number } {
  const started = job.startedOn.getTime() - 100;
  const time = (l: Record<string, unknown>) => Date.parse(String(l.time));
  for (const p of ctx.processes) {
    const mine = p.lines.filter((l) => time(l) >= started);
    // The job's own result line, else any line in its context (a breaker's timer may carry a stale one).
    const last = mine.findLast((l) => l.job_id === job.id) ?? mine.findLast((l) => JSON.stringify(l).includes(job.id));
    if (!last) continue;
    const t0 = time(last);
    const after = mine.find((l) => {
      const message = String((l.err as { message?: string } | undefined)?.message ?? '');
      return time(l) >= t0 && time(l) <= t0 + 1500 && /job queue error/.test(String(l.msg)) && message.includes(`(Queue: ${job.queue},`);
    });
    const err = String((after?.err as { message?: string } | undefined)?.message ?? '').replace(/ \(Queue: .*$/, '');
    const later = p.exit ? `exited later (${p.exit.signal ?? `code ${p.exit.code}`})` : 'is still alive';
    return {
      text: `${p.name} pid ${p.pid} ran it ("${String(last.msg)}" at ${ctx.at(t0)})${after ? `, then pg-boss could not record the job's end: "${err}"` : ''}; that worker ${later}`,
      process: p,
      lastAt: t0,
    };
  }
  const t = job.startedOn.getTime();
  const killed = ctx.kills.find((k) => k.name.startsWith('worker') && k.at >= t - 500 && k.at <= t + ctx.handlerBoundMs + 1000);
  if (killed) {
    return { text: `no process logged it: ${killed.name} pid ${killed.pid} got ${killed.signal} ${((killed.at - t) / 1000).toFixed(2)} s after the job started, so it died holding it` };
  }
  const outage = ctx.dbFaults.find((d) => t >= d.from - 200 && t <= d.to + 200);
  return {
    text: outage
      ? `no process logged it: pg-boss's claim of it committed at ${ctx.at(t)}, during ${outage.kind} (${ctx.at(outage.from)} to ${ctx.at(outage.to)}), and the worker whose fetch made it never received the job`
      : 'no process logged it, no worker was killed and the database was up when it was claimed',
  };
}
