// Exactly-once execution of a mutating request, as atomic phases around one foreign call:
//   begin: claim the key + record the intent (one statement) → the foreign call (no transaction) →
//   finish: record the outcome and finish the key (one statement).
// Each phase moves the key's recovery point forward, so a request that dies anywhere can be resumed
// from where it stopped by a retry with the same key or by the completer. A phase is one statement on the
// way everything goes as expected; whatever is unusual (a refusal, a race, a lost lease, an answer that
// needs more than one change) takes the careful way: the same phase as a transaction under row locks.
// Generic: each kind of request tells its own story with these steps (begin; then, inside run, its
// foreign call and finish; the completer's resume drives the same from the recovery point); this module
// knows nothing of what the call is or what the answers mean. Everything after begin goes inside run or
// drive, which give the lease back on any error.
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
  type Guard,
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
  /** The body's JSON text as it was stored, when read back (a replay): sent byte for byte, never re-encoded. */
  storedJson?: string;
}

/** Which endpoint a kind of mutating request claims its keys for, and the rule it checks under locks. */
export interface ClaimSpec<Params> {
  /** The endpoint, as stored with the key and fingerprinted; never the raw URL a client typed. */
  method: 'POST';
  path: string;
  /**
   * The careful way only, inside the claiming transaction: the business rules, checked under the row
   * locks they need. A ProblemError returned is the request's stored answer, and its intent is not written.
   */
  refusal?(trx: DbOrTrx, key: KeyRow, params: Params): Promise<ProblemError | undefined>;
}

/** What a request ends with: how it used its key, and the answer (stored) or the error it gets. */
export interface IdempotentResult {
  use: KeyUse;
  response?: StoredResponse;
  error?: ProblemError;
}

/**
 * What `begin` leaves: a key this run holds (new, or resumed from its recovery point) with the intent's
 * rows as the claiming statement returned them when it wrote them, or the request's result already.
 */
export type Begun = { kind: 'new' | 'resumed'; key: KeyRow; intent?: unknown } | { kind: 'done'; result: IdempotentResult };

/** The careful way of a finish, inside its transaction: record the outcome and say what to answer. */
export type RecordCarefully = (trx: DbOrTrx, key: KeyRow) => Promise<StoredResponse>;

/** A kind of request as the completer needs it: which keys are its, and how to drive one to its end. */
export interface Resumable {
  method: string;
  path: string;
  resume(key: KeyRow, deadline: number): Promise<StoredResponse>;
}

/** How a request used its key: the idempotency machinery's own result, apart from the request's outcome. */
export type KeyUse = 'new' | 'replayed' | 'in_use' | 'reused' | 'resumed';

export interface IdempotentRequest {
  accountId: string;
  key: string;
  body: JsonObject;
  /** A condition the claim checks in its own statement before it writes or answers anything (see RequestGuard). */
  guard?: RequestGuard;
}

/**
 * A condition a request must meet, checked by its claiming statement in the same snapshot as everything
 * else it reads, so it costs no statement of its own: the caller's API key still live, say, when this
 * process took it on trust (see requireApiKey). When it fails, nothing is written or answered but `refusal`.
 */
export interface RequestGuard extends Guard {
  /** The same condition as a statement of its own: the careful way checks it first. */
  check(db: DbOrTrx): Promise<boolean>;
  /** Told what the claim found, once it knows. */
  found(holds: boolean): void;
  refusal(): ProblemError;
}

type Claim =
  | { kind: 'new' | 'resumed'; key: KeyRow; intent?: unknown }
  | { kind: 'finished'; outcome: 'new' | 'replayed'; response: StoredResponse }
  | { kind: 'in_use' }
  | { kind: 'reused'; first: KeyRow }
  | { kind: 'refused'; error: ProblemError };

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

/** A finished key's answer: its body parsed only if someone reads it (a replay is sent as stored). */
export function storedResponse(row: KeyRow): StoredResponse {
  const storedJson = row.response_body!;
  let body: JsonObject | undefined;
  return {
    status: row.response_status!,
    headers: row.response_headers ?? {},
    storedJson,
    get body() {
      return (body ??= JSON.parse(storedJson) as JsonObject);
    },
  };
}

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
  async function claim<P>(op: ClaimSpec<P>, req: IdempotentRequest, params: P, intent: Intent): Promise<Claim> {
    const fingerprint = requestFingerprint(op.method, op.path, req.body);
    for (let attempt = 0; attempt < CLAIM_TRIES; attempt += 1) {
      const id = randomUUID();
      const newKey = { ...req, id, leaseToken: randomUUID(), method: op.method, path: op.path, fingerprint };
      let row;
      try {
        row = await givingBackIfUnanswered(autocommit(db, (conn) => claimKeyWithIntent(conn, newKey, settings, intent, req.guard)), () => ({
          id,
          lease_token: newKey.leaseToken,
        }));
      } catch (err) {
        // A constraint a concurrent request got to first (a refund past what is left, say): decide under locks.
        if ((err as { code?: string }).code === CHECK_VIOLATION) return claimCarefully(op, req, params, intent, fingerprint);
        throw err;
      }
      // The intent cannot be written at once, the key was inserted by another request just now, or the
      // request's guard failed.
      if (!row) return claimCarefully(op, req, params, intent, fingerprint);
      req.guard?.found(true);
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
    return claimCarefully(op, req, params, intent, fingerprint);
  }

  /** What an existing key says about a request with it, unless it is free to resume. */
  function decide(op: { method: string; path: string }, existing: KeyRow & { leased: boolean }, fingerprint: string): Claim | undefined {
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

  /** Phase 1 the careful way: one transaction, the key's row locked, the request's rules checked under locks. */
  async function claimCarefully<P>(op: ClaimSpec<P>, req: IdempotentRequest, params: P, intent: Intent, fingerprint: string): Promise<Claim> {
    if (req.guard) {
      const holds = await autocommit(db, (conn) => req.guard!.check(conn));
      req.guard.found(holds);
      if (!holds) return { kind: 'refused', error: req.guard.refusal() };
    }
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
          return recordIntent(trx, op, inserted, params, intent);
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

  async function recordIntent<P>(trx: DbOrTrx, op: ClaimSpec<P>, key: KeyRow, params: P, intent: Intent): Promise<Claim> {
    const refused = await op.refusal?.(trx, key, params);
    if (!refused) {
      await recordIntentOf(trx, key.id, intent);
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

  /**
   * Claims the request's key with its intent, the request's own rows (one statement; the careful way under
   * row locks when it must): a key this run now holds, or the request's result already (a replay, in use,
   * reused, refused). An error comes out as a RequestInterruptedError that says whether anything may have
   * been written.
   */
  async function begin<P>(spec: ClaimSpec<P>, req: IdempotentRequest, params: P, intent: Intent): Promise<Begun> {
    let claimed: Claim;
    try {
      claimed = await claim(spec, req, params, intent);
    } catch (err) {
      throw new RequestInterruptedError(err, err instanceof CommitUnknownError ? 'unknown' : 'none');
    }
    switch (claimed.kind) {
      case 'refused':
        throw claimed.error;
      case 'finished':
        return { kind: 'done', result: { use: claimed.outcome, response: claimed.response } };
      case 'in_use':
        return { kind: 'done', result: { use: 'in_use', error: inUseError() } };
      case 'reused':
        return { kind: 'done', result: { use: 'reused', error: reusedError(claimed.first) } };
      case 'new':
      case 'resumed':
        return claimed;
    }
  }

  /**
   * From `intent_recorded` to `finished` for a key this run holds: `work` (the foreign call, then
   * `finish`). Any error gives the lease back, so a retry resumes at once instead of waiting it out.
   */
  async function drive(key: KeyRow, work: () => Promise<StoredResponse>): Promise<StoredResponse> {
    try {
      return await work();
    } catch (err) {
      await giveBack(key);
      throw err;
    }
  }

  /** drive() for a request: its result, or a RequestInterruptedError (anything may have been written). */
  async function run(begun: Extract<Begun, { key: KeyRow }>, work: () => Promise<StoredResponse>): Promise<IdempotentResult> {
    try {
      return { use: begun.kind, response: await drive(begun.key, work) };
    } catch (err) {
      throw new RequestInterruptedError(err, 'unknown');
    }
  }

  /**
   * Records the outcome and finishes the key: in one statement when `atOnce` can say it all, else the
   * careful way, in a transaction under the key's row lock. Answers what the request answers.
   */
  async function finish(key: KeyRow, atOnce: { changes: Changes; response: StoredResponse } | undefined, carefully: RecordCarefully): Promise<StoredResponse> {
    if (atOnce && (await autocommit(db, (conn) => finishKeyWith(conn, key, atOnce.changes, atOnce.response)))) {
      return atOnce.response;
    }
    return inTransaction(db, async (trx) => {
      const current = await lockKeyById(trx, key.id);
      if (!current) throw new Error(`idempotency key ${key.id} vanished while in flight`);
      // Someone who resumed after our lease ran out finished first: theirs is the answer.
      if (current.recovery_point === 'finished') return storedResponse(current);
      const response = await carefully(trx, current);
      await finishKey(trx, key.id, response);
      return response;
    });
  }

  /**
   * The completer: drives requests abandoned mid-way (a crash, a lost database) to their end from their
   * recovery point, exactly as a client's retry with the same key would. Returns how many it finished.
   */
  async function completeAbandoned(
    resumables: Resumable[],
    options: { limit: number; timeoutMs: number },
  ): Promise<number> {
    let finished = 0;
    // One lease at a time, so no lease runs out while it waits its turn behind the others.
    for (let n = 0; n < options.limit; n += 1) {
      const key = await leaseAbandonedKey(db, settings.leaseSeconds);
      if (!key) break;
      const op = resumables.find((o) => o.method === key.request_method && o.path === key.request_path);
      if (!op) {
        logger.error({ key_id: key.id, path: key.request_path }, 'completer: no story for abandoned request');
        continue;
      }
      try {
        const response = await withDeadline(`complete_${key.id}`, options.timeoutMs, () =>
          op.resume(key, Date.now() + options.timeoutMs - OUTCOME_RESERVE_MS),
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

  return { begin, drive, run, finish, completeAbandoned, reapExpired, isRepeat };
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
