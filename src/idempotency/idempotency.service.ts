// Exactly-once execution of a mutating request, as atomic phases around one foreign call:
//   claim the key + record the intent (one statement) → callOut (no transaction) → record the outcome
//   and finish the key (one statement).
// Each phase moves the key's recovery point forward, so a request that dies anywhere can be resumed
// from where it stopped by a retry with the same key or by the completer. A phase is one statement on the
// way everything goes as expected; whatever is unusual (a refusal, a race, a lost lease, an answer that
// needs more than one change) takes the careful way: the same phase as a transaction under row locks.
// Generic: its user hands it an operation; it knows nothing of what the foreign call is or what the
// answers mean.
import { randomUUID } from 'node:crypto';
import { autocommit, type Db, type DbOrTrx, inTransaction } from '../db/database.ts';
import type { JsonObject } from '../db/schema.ts';
import { CommitUnknownError, databaseTrouble, ProblemError, RequestInterruptedError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { currentRequestId, requestContext, withDeadline } from '../request-context.ts';
import {
  type Changes,
  claimKeyWithIntent,
  deleteExpiredKey,
  deleteExpiredKeys,
  deleteKey,
  finishKey,
  finishKeyWith,
  keyExists,
  insertKeyIfAbsent,
  type Intent,
  type KeyRow,
  leaseAbandonedKey,
  lockKeyByAccountKey,
  lockKeyById,
  recordIntentOf,
  releaseLease,
  takeLease,
  takeLeaseIfFree,
} from './idempotency.repository.ts';
import { requestFingerprint } from './idempotency.schemas.ts';

export type { Intent, KeyRow };

export interface StoredResponse {
  status: number;
  body: JsonObject;
  headers: Record<string, string>;
}

/** One kind of mutating request run by the idempotency machinery; `Outcome` is what its foreign call learns. */
export interface IdempotentOperation<Params, Outcome = unknown> {
  /** The endpoint, as stored with the key and fingerprinted; never the raw URL a client typed. */
  method: 'POST';
  path: string;
  /** Validates a body: the request's before anything is stored, and a stored one when resuming. */
  parse(body: unknown): Params;
  /** The local rows of a new request (see Intent), written with its key in one statement. */
  intent(key: { id: string; accountId: string }, params: Params): Intent;
  /**
   * The careful way only, inside the claiming transaction: the business rules, checked under the row
   * locks they need. A ProblemError returned is the request's stored answer, and its intent is not written.
   */
  refusal?(trx: DbOrTrx, key: KeyRow, params: Params): Promise<ProblemError | undefined>;
  /**
   * Outside any transaction: the one foreign call, with an idempotency key derived from ours. `intent` is
   * what the claiming statement's `intent` returned, as JSON, when this run claimed the key itself.
   */
  callOut(key: KeyRow, deadline: number, intent?: unknown): Promise<Outcome>;
  /**
   * The outcome as changes to write with the key's finish in one statement (see Changes), and the answer it
   * gives; undefined when it needs more (the careful way).
   */
  finishAtOnce?(outcome: Outcome): { changes: Changes; response: StoredResponse } | undefined;
  /** The careful way, inside the finishing transaction: record the outcome and say what to answer. */
  recordOutcome(trx: DbOrTrx, key: KeyRow, outcome: Outcome): Promise<StoredResponse>;
  /**
   * The answer sent for a stored one, the first time and on every replay, when they differ: what must not
   * be stored in the clear (a webhook endpoint's secret) is stored sealed and opened here.
   */
  reveal?(stored: StoredResponse): StoredResponse;
}

/** An operation as the completer needs it: which requests are its, and how to drive one to its end. */
export interface Resumable {
  method: string;
  path: string;
  drive(key: KeyRow, deadline: number): Promise<StoredResponse>;
}

/** How a request used its key: the idempotency machinery's own result, apart from the operation's outcome. */
export type KeyUse = 'new' | 'replayed' | 'in_use' | 'reused' | 'resumed';

export interface IdempotentRequest {
  accountId: string;
  key: string;
  body: JsonObject;
}

type Claim =
  | { kind: 'new' | 'resumed'; key: KeyRow; intent?: unknown }
  | { kind: 'finished'; outcome: 'new' | 'replayed'; response: StoredResponse }
  | { kind: 'in_use' }
  | { kind: 'reused'; first: KeyRow };

export interface IdempotencySettings {
  leaseSeconds: number;
  ttlSeconds: number;
}

/** Time kept back from the foreign call for recording its outcome before the deadline. */
export const OUTCOME_RESERVE_MS = 750;

// A claim that keeps losing races to concurrent deletes and inserts of the same key gives up after this.
const CLAIM_TRIES = 3;
// A lease that could not be given back is tried again at these intervals (doubling) until the database
// answers, so a retry finds its key free within about a second of the database's return.
const GIVE_BACK_FIRST_RETRY_MS = 100;
const GIVE_BACK_RETRY_MAX_MS = 1000;
const CHECK_VIOLATION = '23514';

export const storedResponse = (row: KeyRow): StoredResponse => ({
  status: row.response_status!,
  body: row.response_body!,
  headers: row.response_headers ?? {},
});

export function createIdempotency(deps: { db: Db; settings: IdempotencySettings; logger: Logger }) {
  const { db, settings, logger } = deps;

  /**
   * Gives a lease back so a retry (or the completer) may resume the key at once. This process still holds
   * the lease's token after it lost its database, so the release is tried again until the database
   * answers, for as long as the lease would have lasted; the first try is awaited, the others run behind.
   * Outside any deadline (the request's may have just run out): this is cleanup, one short statement.
   * `unanswered`: the statement that took the lease went unanswered, and may still be running on the server
   * (waiting on a lock, say) and commit after this release found nothing to release; so a release that
   * changed nothing is tried again too.
   */
  async function giveBack(key: Pick<KeyRow, 'id' | 'lease_token'>, options: { unanswered?: boolean } = {}): Promise<void> {
    const until = Date.now() + settings.leaseSeconds * 1000;
    const release = () => requestContext.exit(() => releaseLease(db, key));
    const retry = (wait: number) => {
      if (Date.now() + wait >= until) return;
      setTimeout(() => {
        release().then(
          (released) => {
            if (released) logger.info({ key_id: key.id }, 'idempotency lease given back once the database answered again');
            else if (options.unanswered) retry(Math.min(wait * 2, GIVE_BACK_RETRY_MAX_MS));
          },
          (err: unknown) => (databaseTrouble(err) ? retry(Math.min(wait * 2, GIVE_BACK_RETRY_MAX_MS)) : leaseKept(key, err)),
        );
      }, wait).unref();
    };
    try {
      if (!(await release()) && options.unanswered) retry(GIVE_BACK_FIRST_RETRY_MS);
    } catch (err) {
      if (databaseTrouble(err)) retry(GIVE_BACK_FIRST_RETRY_MS);
      else leaseKept(key, err);
    }
  }

  /** `work`; when its statement went unanswered, the lease it may have taken (`lease()`) is given back. */
  async function givingBackIfUnanswered<T>(work: Promise<T>, lease: () => Pick<KeyRow, 'id' | 'lease_token'> | undefined): Promise<T> {
    try {
      return await work;
    } catch (err) {
      const taken = err instanceof CommitUnknownError ? lease() : undefined;
      if (taken) await giveBack(taken, { unanswered: true });
      throw err;
    }
  }

  const leaseKept = (key: Pick<KeyRow, 'id'>, err: unknown) => {
    const e = err as Error & { code?: string };
    logger.warn({ key_id: key.id, code: e.code, reason: e.message }, 'could not give an idempotency lease back; it runs out by itself');
  };

  /** Phase 1 in one statement, without row locks: new, a replay, in use, reused, or resumable. */
  async function claim<P, O>(op: IdempotentOperation<P, O>, req: IdempotentRequest, params: P): Promise<Claim> {
    const fingerprint = requestFingerprint(op.method, op.path, req.body);
    for (let attempt = 0; attempt < CLAIM_TRIES; attempt += 1) {
      const id = randomUUID();
      const intent = op.intent({ id, accountId: req.accountId }, params);
      const newKey = { ...req, id, leaseToken: randomUUID(), method: op.method, path: op.path, fingerprint };
      let row;
      try {
        row = await givingBackIfUnanswered(autocommit(db, (conn) => claimKeyWithIntent(conn, newKey, settings, intent)), () => ({
          id,
          lease_token: newKey.leaseToken,
        }));
      } catch (err) {
        // A constraint a concurrent request got to first (a refund past what is left, say): decide under locks.
        if ((err as { code?: string }).code === CHECK_VIOLATION) return claimCarefully(op, req, params, fingerprint);
        throw err;
      }
      // The intent cannot be written at once, or the key was inserted by another request just now.
      if (!row) return claimCarefully(op, req, params, fingerprint);
      if (row.claimed) return { kind: 'new', key: row, intent: row.intent };
      if (row.expired && row.recovery_point === 'finished') {
        // An expired key counts as absent at once, even before the reaper comes by. An unfinished one
        // does not: its request was accepted and must still be driven to its end.
        await autocommit(db, (conn) => deleteExpiredKey(conn, row.id));
        continue;
      }
      const decided = decide(op, row, fingerprint);
      if (decided) return decided;
      // Unfinished and nobody's: take the lease, unless someone just did (then look again).
      const leaseToken = randomUUID();
      const leased = await givingBackIfUnanswered(
        autocommit(db, (conn) => takeLeaseIfFree(conn, row.id, settings.leaseSeconds, leaseToken)),
        () => ({ id: row.id, lease_token: leaseToken }),
      );
      if (leased) return { kind: 'resumed', key: leased };
    }
    return claimCarefully(op, req, params, fingerprint);
  }

  /** What an existing key says about a request with it, unless it is free to resume. */
  function decide<P, O>(op: IdempotentOperation<P, O>, existing: KeyRow & { leased: boolean }, fingerprint: string): Claim | undefined {
    const sameRequest =
      existing.request_fingerprint === fingerprint &&
      existing.request_method === op.method &&
      existing.request_path === op.path;
    if (!sameRequest) return { kind: 'reused', first: existing };
    if (existing.recovery_point === 'finished') {
      return { kind: 'finished', outcome: 'replayed', response: storedResponse(existing) };
    }
    if (existing.leased) return { kind: 'in_use' };
    return undefined;
  }

  /** Phase 1 the careful way: one transaction, the key's row locked, the operation's rules checked under locks. */
  async function claimCarefully<P, O>(op: IdempotentOperation<P, O>, req: IdempotentRequest, params: P, fingerprint: string): Promise<Claim> {
    // The lease this transaction may have taken when its COMMIT goes unanswered.
    let taken: Pick<KeyRow, 'id' | 'lease_token'> | undefined;
    const leaseToken = randomUUID();
    const claimed = inTransaction(db, async (trx): Promise<Claim> => {
      taken = undefined;
      for (let attempt = 0; attempt < CLAIM_TRIES; attempt += 1) {
        const inserted = await insertKeyIfAbsent(
          trx,
          { ...req, method: op.method, path: op.path, fingerprint },
          settings.ttlSeconds,
          leaseToken,
        );
        if (inserted) {
          taken = inserted;
          return recordIntent(trx, op, inserted, params);
        }

        const existing = await lockKeyByAccountKey(trx, req.accountId, req.key, settings.leaseSeconds);
        if (!existing) continue; // deleted between our insert and our select: try the insert again
        if (existing.expired && existing.recovery_point === 'finished') {
          await deleteKey(trx, existing.id);
          continue;
        }
        const decided = decide(op, existing, fingerprint);
        if (decided) return decided;
        taken = { id: existing.id, lease_token: await takeLease(trx, existing.id, leaseToken) };
        return { kind: 'resumed' as const, key: { ...existing, lease_token: taken.lease_token } };
      }
      throw new Error(`could not claim idempotency key after ${CLAIM_TRIES} tries`);
    });
    return givingBackIfUnanswered(claimed, () => taken);
  }

  async function recordIntent<P, O>(trx: DbOrTrx, op: IdempotentOperation<P, O>, key: KeyRow, params: P): Promise<Claim> {
    const refused = await op.refusal?.(trx, key, params);
    if (!refused) {
      await recordIntentOf(trx, key.id, op.intent({ id: key.id, accountId: key.account_id }, params));
      return { kind: 'new', key };
    }
    if (refused.status >= 500) throw refused;
    // The request started executing and was refused by a business rule: that refusal is its answer.
    const response: StoredResponse = {
      status: refused.status,
      body: refused.toBody(currentRequestId()),
      headers: { 'Content-Type': 'application/problem+json' },
    };
    await finishKey(trx, key.id, response);
    return { kind: 'finished', outcome: 'new', response };
  }

  /** From `intent_recorded` to `finished`: the foreign call, then its outcome, in one statement when it can be. */
  async function drive<P, O>(op: IdempotentOperation<P, O>, key: KeyRow, deadline: number, intent?: unknown): Promise<StoredResponse> {
    try {
      const outcome = await op.callOut(key, deadline, intent);
      const atOnce = op.finishAtOnce?.(outcome);
      if (atOnce && (await autocommit(db, (conn) => finishKeyWith(conn, key, atOnce.changes, atOnce.response)))) {
        return atOnce.response;
      }
      return await inTransaction(db, async (trx) => {
        const current = await lockKeyById(trx, key.id);
        if (!current) throw new Error(`idempotency key ${key.id} vanished while in flight`);
        // Someone who resumed after our lease ran out finished first: theirs is the answer.
        if (current.recovery_point === 'finished') return storedResponse(current);
        const response = await op.recordOutcome(trx, current, outcome);
        await finishKey(trx, key.id, response);
        return response;
      });
    } catch (err) {
      // Let a retry resume at once instead of waiting out the lease.
      await giveBack(key);
      throw err;
    }
  }

  /**
   * Runs a request exactly once per (account, key): new, resumed, or replayed from what was stored. An
   * error on the way comes out as a RequestInterruptedError that says whether anything may have been
   * written: nothing before the key was claimed, unknown from its commit on.
   */
  async function execute<P, O>(
    op: IdempotentOperation<P, O>,
    req: IdempotentRequest,
    params: P,
    deadline: number,
  ): Promise<{ use: KeyUse; response?: StoredResponse; error?: ProblemError }> {
    let claimed: Claim;
    try {
      claimed = await claim(op, req, params);
    } catch (err) {
      throw new RequestInterruptedError(err, err instanceof CommitUnknownError ? 'unknown' : 'none');
    }
    const reveal = (response: StoredResponse) => (op.reveal ? op.reveal(response) : response);
    switch (claimed.kind) {
      case 'finished':
        return { use: claimed.outcome, response: reveal(claimed.response) };
      case 'in_use':
        return { use: 'in_use', error: inUseError() };
      case 'reused':
        return { use: 'reused', error: reusedError(claimed.first) };
      case 'new':
      case 'resumed':
        try {
          return { use: claimed.kind, response: reveal(await drive(op, claimed.key, deadline, claimed.intent)) };
        } catch (err) {
          throw new RequestInterruptedError(err, 'unknown');
        }
    }
  }

  /**
   * The completer: drives requests abandoned mid-way (a crash, a lost database) to their end from their
   * recovery point, exactly as a client's retry with the same key would. Returns how many it finished.
   */
  async function completeAbandoned(
    operations: Resumable[],
    options: { limit: number; timeoutMs: number },
  ): Promise<number> {
    let finished = 0;
    // One lease at a time, so no lease runs out while it waits its turn behind the others.
    for (let n = 0; n < options.limit; n += 1) {
      const key = await leaseAbandonedKey(db, settings.leaseSeconds);
      if (!key) break;
      const op = operations.find((o) => o.method === key.request_method && o.path === key.request_path);
      if (!op) {
        logger.error({ key_id: key.id, path: key.request_path }, 'completer: no operation for abandoned request');
        continue;
      }
      try {
        const response = await withDeadline(`complete_${key.id}`, options.timeoutMs, () =>
          op.drive(key, Date.now() + options.timeoutMs - OUTCOME_RESERVE_MS),
        );
        finished += 1;
        logger.info(
          { key_id: key.id, account_id: key.account_id, path: key.request_path, status: response.status },
          'completer finished an abandoned request',
        );
      } catch (err) {
        const e = err as Error & { code?: string };
        logger.warn({ key_id: key.id, code: e.code, reason: e.message }, 'completer could not finish an abandoned request; will try again');
      }
    }
    return finished;
  }

  /** The reaper: removes expired keys in short batches, so it never holds many locks for long. */
  async function reapExpired(options: {
    batchSize: number;
    maxBatches: number;
  }): Promise<{ reaped: number; batches: number }> {
    let reaped = 0;
    let batches = 0;
    while (batches < options.maxBatches) {
      const deleted = await deleteExpiredKeys(db, options.batchSize);
      batches += 1;
      reaped += deleted;
      if (deleted < options.batchSize) break;
    }
    return { reaped, batches };
  }

  /** Whether a request with this key was made already: its repeat gets the stored answer, checks or not. */
  const isRepeat = (accountId: string, key: string) => autocommit(db, (conn) => keyExists(conn, accountId, key));

  /** `op` as the completer drives it, whatever its parameters and outcome. */
  const resumable = <P, O>(op: IdempotentOperation<P, O>): Resumable => ({
    method: op.method,
    path: op.path,
    drive: (key, deadline) => drive(op, key, deadline),
  });

  return { execute, drive, completeAbandoned, reapExpired, isRepeat, resumable };
}

export type Idempotency = ReturnType<typeof createIdempotency>;

function inUseError(): ProblemError {
  return new ProblemError(
    409,
    'idempotency_key_in_use',
    'Idempotency-Key in use',
    'An earlier request with this Idempotency-Key is still being processed. Retry shortly with the same key.',
    { retryAfterSeconds: 1 },
  );
}

function reusedError(first: KeyRow): ProblemError {
  return new ProblemError(
    422,
    'idempotency_key_reused',
    'Idempotency-Key reused with a different request',
    `This key was first used for ${first.request_method} ${first.request_path} with a different body.`,
  );
}
