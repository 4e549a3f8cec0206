import { Router } from 'express';
import type { Db } from '../db/database.ts';
import { parseWith } from '../validation.ts';
import { type IdempotentHandler, respondIdempotently } from '../idempotency/idempotency.http.ts';
import { listChargesQuerySchema } from './charges.schemas.ts';
import { getCharge, listChargesPage } from './charges.service.ts';

export function chargeRoutes(deps: {
  db: Db;
  createCharge: IdempotentHandler;
}): Router {
  const router = Router();

  router.post('/charges', (req, res) => respondIdempotently(req, res, deps.createCharge));

  router.get('/charges/:id', async (req, res) => {
    res.json(await getCharge(deps.db, res.locals.account!.id, req.params.id));
  });

  router.get('/charges', async (req, res) => {
    const query = parseWith(listChargesQuerySchema, req.query, 'query');
    res.json(await listChargesPage(deps.db, res.locals.account!.id, query.limit, query.starting_after));
  });

  return router;
}
