import { Router } from 'express';
import type { Db } from '../db/database.ts';
import { type IdempotentHandler, respondIdempotently } from '../idempotency/idempotency.http.ts';
import { getRefund } from './refunds.service.ts';

export function refundRoutes(deps: {
  db: Db;
  createRefund: IdempotentHandler;
}): Router {
  const router = Router();
  router.post('/refunds', (req, res) => respondIdempotently(req, res, deps.createRefund));
  router.get('/refunds/:id', async (req, res) => {
    res.json(await getRefund(deps.db, res.locals.account!.id, req.params.id));
  });
  return router;
}
