// Exactly-once execution of a mutating request, as atomic phases around one foreign call:
//   claimKey (+ recordIntent, one transaction) → callProcessor (no transaction) → recordOutcome (one transaction).
// Each phase moves the key's recovery point forward, so a request that dies anywhere can be resumed
// from where it stopped by a retry with the same key or by the completer. Charges and refunds both use it.
import type { Transaction } from 'kysely';
import type { Db } from '../db/database.ts';
import type { Database, JsonObject } from '../db/schema.ts';
import { ProblemError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { ProcessorOutcome } from '../processor/processor.client.ts';
import { currentRequestId } from '../request-context.ts';
import {
  deleteExpiredKeys,
  deleteKey,
  finishKey,
  insertKeyIfAbsent,
  type KeyRow,
  lockKeyById,
  leaseAbandonedKey,
  lockKeyByAccountKey,
  releaseLease,
  takeLease,
} from './idempotency.repository.ts';
import { requestFingerprint } from './idempotency.schemas.ts';

export type { KeyRow };
export type Trx = Transaction<Database>;

export interface StoredResponse {
  status: number;
  body: JsonObject;
  headers: Record<string, string>;
}

/** One kind of mutating request (create a charge, create a refund) run by the idempotency machinery. */
export interface IdempotentOperation<Params> {
  /** The endpoint, as stored with the key and fingerprinted; never the raw URL a client typed. */
  method: 'POST';
  path: string;
  /** Validates a body: the request's before anything is stored, and a stored one when resuming. */
  parse(body: unknown): Params;
  /** Inside the claiming transaction: the local rows of a new request. A thrown ProblemError becomes its stored answer. */
  recordIntent(trx: Trx, key: KeyRow, params: Params): Promise<void>;
  /** Outside any transaction: the one foreign call, with an idempotency key derived from ours. */
  callProcessor(key: KeyRow, deadline: number): Promise<ProcessorOutcome>;
  /** Inside the finishing transaction: apply the outcome and say what to answer. */
  recordOutcome(trx: Trx, key: KeyRow, outcome: ProcessorOutcome): Promise<StoredResponse>;
}

export type IdempotencyOutcome = 'new' | 'replayed' | 'in_use' | 'reused' | 'resumed';

export interface IdempotentRequest {
  accountId: string;
  key: string;
  body: JsonObject;
}

type Claim =
  | { kind: 'new' | 'resumed'; key: KeyRow }
  | { kind: 'finished'; outcome: 'new' | 'replayed'; response: StoredResponse }
  | { kind: 'in_use' }
  | { kind: 'reused'; first: KeyRow };

export interface IdempotencySettings {
  leaseSeconds: number;
  ttlSeconds: number;
}

// A claim that keeps losing races to concurrent deletes and inserts of the same key gives up after this.
const CLAIM_TRIES = 3;

/**
 * The answer a charge or refund deserves by its status: 201 succeeded, 202 pending (follow Location),
 * 402 failed as problem+json carrying the object. Both operations store what this returns.
 */
export function paymentResponse(
  row: {
    id: string;
    status: 'pending' | 'succeeded' | 'failed';
    failure_code: string | null;
    failure_message: string | null;
  },
  object: 'charge' | 'refund',
  body: JsonObject,
  failedTitle: string,
): StoredResponse {
  const headers = { 'Content-Type': 'application/json', Location: `/v1/${object}s/${row.id}` };
  if (row.status === 'succeeded') return { status: 201, body, headers };
  if (row.status === 'pending') return { status: 202, body, headers };
  const failed = new ProblemError(402, row.failure_code!, failedTitle, row.failure_message!, {
    extra: { [object]: body },
  });
  return {
    status: 402,
    body: failed.toBody(currentRequestId()),
    headers: { ...headers, 'Content-Type': 'application/problem+json' },
  };
}

export const storedResponse = (row: KeyRow): StoredResponse => ({
  status: row.response_status!,
  body: row.response_body!,
  headers: row.response_headers ?? {},
});

export function createIdempotency(deps: { db: Db; settings: IdempotencySettings; logger: Logger }) {
  const { db, settings, logger } = deps;

  async function claimKey<P>(op: IdempotentOperation<P>, req: IdempotentRequest, params: P): Promise<Claim> {
    const fingerprint = requestFingerprint(op.method, op.path, req.body);
    return db.transaction().execute(async (trx) => {
      for (let attempt = 0; attempt < CLAIM_TRIES; attempt += 1) {
        const inserted = await insertKeyIfAbsent(
          trx,
          { ...req, method: op.method, path: op.path, fingerprint },
          settings.ttlSeconds,
        );
        if (inserted) return recordIntent(trx, op, inserted, params);

        const existing = await lockKeyByAccountKey(trx, req.accountId, req.key, settings.leaseSeconds);
        if (!existing) continue; // deleted between our insert and our select: try the insert again
        if (existing.expired && existing.recovery_point === 'finished') {
          // An expired key counts as absent at once, even before the reaper comes by. An unfinished one
          // does not: its request was accepted and must still be driven to its end.
          await deleteKey(trx, existing.id);
          continue;
        }
        const sameRequest =
          existing.request_fingerprint === fingerprint &&
          existing.request_method === op.method &&
          existing.request_path === op.path;
        if (!sameRequest) return { kind: 'reused', first: existing };
        if (existing.recovery_point === 'finished') {
          return { kind: 'finished', outcome: 'replayed', response: storedResponse(existing) };
        }
        if (existing.leased) return { kind: 'in_use' };
        const leaseToken = await takeLease(trx, existing.id);
        return { kind: 'resumed', key: { ...existing, lease_token: leaseToken } };
      }
      throw new Error(`could not claim idempotency key after ${CLAIM_TRIES} tries`);
    });
  }

  async function recordIntent<P>(trx: Trx, op: IdempotentOperation<P>, key: KeyRow, params: P): Promise<Claim> {
    try {
      await op.recordIntent(trx, key, params);
      return { kind: 'new', key };
    } catch (err) {
      if (!(err instanceof ProblemError) || err.status >= 500) throw err;
      // The request started executing and was refused by a business rule: that refusal is its answer.
      const response: StoredResponse = {
        status: err.status,
        body: err.toBody(currentRequestId()),
        headers: { 'Content-Type': 'application/problem+json' },
      };
      await finishKey(trx, key.id, response);
      return { kind: 'finished', outcome: 'new', response };
    }
  }

  /** From `intent_recorded` to `finished`: the foreign call, then its outcome in one transaction. */
  async function drive<P>(op: IdempotentOperation<P>, key: KeyRow, deadline: number): Promise<StoredResponse> {
    try {
      const outcome = await op.callProcessor(key, deadline);
      return await db.transaction().execute(async (trx) => {
        const current = await lockKeyById(trx, key.id);
        if (!current) throw new Error(`idempotency key ${key.id} vanished while in flight`);
        // Someone who resumed after our lease ran out finished first: theirs is the answer.
        if (current.recovery_point === 'finished') return storedResponse(current);
        const response = await op.recordOutcome(trx, current, outcome);
        await finishKey(trx, key.id, response);
        return response;
      });
    } catch (err) {
      // Let a retry resume at once instead of waiting out the lease; if this fails too, the lease expires.
      await releaseLease(db, key).catch((e) => logger.warn({ err: e }, 'could not release idempotency lease'));
      throw err;
    }
  }

  /** Runs a request exactly once per (account, key): new, resumed, or replayed from what was stored. */
  async function execute<P>(
    op: IdempotentOperation<P>,
    req: IdempotentRequest,
    params: P,
    deadline: number,
  ): Promise<{ outcome: IdempotencyOutcome; response?: StoredResponse; error?: ProblemError }> {
    const claim = await claimKey(op, req, params);
    switch (claim.kind) {
      case 'finished':
        return { outcome: claim.outcome, response: claim.response };
      case 'in_use':
        return { outcome: 'in_use', error: inUseError() };
      case 'reused':
        return { outcome: 'reused', error: reusedError(claim.first) };
      case 'new':
      case 'resumed':
        return { outcome: claim.kind, response: await drive(op, claim.key, deadline) };
    }
  }

  /**
   * The completer: drives requests abandoned mid-way (a crash, a lost database) to their end from their
   * recovery point, exactly as a client's retry with the same key would. Returns how many it finished.
   */
  async function completeAbandoned(
    operations: IdempotentOperation<unknown>[],
    options: { limit: number; deadline: () => number },
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
        const response = await drive(op, key, options.deadline());
        finished += 1;
        logger.info(
          { key_id: key.id, account_id: key.account_id, path: key.request_path, status: response.status },
          'completer finished an abandoned request',
        );
      } catch (err) {
        logger.warn({ err, key_id: key.id }, 'completer could not finish an abandoned request; will try again');
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

  return { execute, drive, completeAbandoned, reapExpired };
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
