import { Router } from 'express';
import type { Db } from '../db/database.ts';
import { respondIdempotently } from '../idempotency/idempotency.http.ts';
import type { Idempotency, IdempotentOperation } from '../idempotency/idempotency.service.ts';
import type { CreateRefundParams } from './refunds.schemas.ts';
import { getRefund } from './refunds.service.ts';

export function refundRoutes(deps: {
  db: Db;
  idempotency: Idempotency;
  createRefund: IdempotentOperation<CreateRefundParams>;
}): Router {
  const router = Router();
  router.post('/refunds', (req, res) => respondIdempotently(req, res, deps.idempotency, deps.createRefund));
  router.get('/refunds/:id', async (req, res) => {
    res.json(await getRefund(deps.db, res.locals.account!.id, req.params.id));
  });
  return router;
}
