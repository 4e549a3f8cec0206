// The HTTP side of an idempotent POST: read the key, validate, execute once, answer what was stored.
import type { Request, Response } from 'express';
import type { JsonObject } from '../db/schema.ts';
import { requestContext } from '../request-context.ts';
import type { Idempotency, IdempotentOperation } from './idempotency.service.ts';
import { parseIdempotencyKey } from './idempotency.schemas.ts';

// Time kept back from the processor call for recording its outcome before the request's deadline.
const OUTCOME_RESERVE_MS = 750;

export async function respondIdempotently<P>(
  req: Request,
  res: Response,
  idempotency: Idempotency,
  op: IdempotentOperation<P>,
): Promise<void> {
  const key = parseIdempotencyKey(req.get('idempotency-key'));
  const params = op.parse(req.body);
  const deadline = (requestContext.getStore()?.deadline ?? Date.now()) - OUTCOME_RESERVE_MS;
  const result = await idempotency.execute(
    op,
    {
      accountId: res.locals.account!.id,
      key,
      body: req.body as JsonObject,
    },
    params,
    deadline,
  );
  res.locals.idempotency = result.outcome;
  if (res.locals.deadlinePassed) return; // already told 503 request_timeout; the stored answer waits for a retry
  if (result.error) throw result.error;
  const stored = result.response!;
  if (result.outcome === 'replayed') res.set('Idempotent-Replayed', 'true');
  res.set({ 'Content-Type': 'application/json', ...stored.headers });
  res.status(stored.status).send(JSON.stringify(stored.body));
}
