// The HTTP side of an idempotent POST: read the key, run the request's story once, answer what was stored.
import type { Request, Response } from 'express';
import type { JsonObject } from '../db/schema.ts';
import { requestContext } from '../request-context.ts';
import { type IdempotentRequest, type IdempotentResult, OUTCOME_RESERVE_MS } from './idempotency.service.ts';
import { parseIdempotencyKey } from './idempotency.schemas.ts';

/** A kind of request's own story, from its body to its result (charges.service.ts `createCharge`, say). */
export type IdempotentHandler = (request: IdempotentRequest, deadline: number) => Promise<IdempotentResult>;

export async function respondIdempotently(req: Request, res: Response, handle: IdempotentHandler): Promise<void> {
  const key = parseIdempotencyKey(req.get('idempotency-key'));
  const deadline = (requestContext.getStore()?.deadline ?? Date.now()) - OUTCOME_RESERVE_MS;
  const work = handle({ accountId: res.locals.account!.id, key, body: req.body as JsonObject, guard: res.locals.trustedKey }, deadline);
  // The request's slot stays taken until its work ends, even when the deadline answered first.
  res.locals.holdSlotUntil?.(work);
  const result = await work;
  res.locals.idempotency = result.use;
  if (res.locals.deadlinePassed) return; // already told 503 request_timeout; the stored answer waits for a retry
  if (result.error) throw result.error;
  const stored = result.response!;
  if (result.use === 'replayed') res.set('Idempotent-Replayed', 'true');
  res.set({ 'Content-Type': 'application/json', ...stored.headers });
  res.status(stored.status).send(stored.storedJson ?? JSON.stringify(stored.body));
}
