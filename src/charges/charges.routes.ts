import { Router } from 'express';
import type { Db } from '../db/database.ts';
import { parseWith } from '../validation.ts';
import { respondIdempotently } from '../idempotency/idempotency.http.ts';
import type { Idempotency, IdempotentOperation } from '../idempotency/idempotency.service.ts';
import type { CreateChargeParams } from './charges.schemas.ts';
import { listChargesQuerySchema } from './charges.schemas.ts';
import { getCharge, listChargesPage } from './charges.service.ts';

export function chargeRoutes(deps: {
  db: Db;
  idempotency: Idempotency;
  createCharge: IdempotentOperation<CreateChargeParams>;
}): Router {
  const router = Router();

  router.post('/charges', (req, res) => respondIdempotently(req, res, deps.idempotency, deps.createCharge));

  router.get('/charges/:id', async (req, res) => {
    res.json(await getCharge(deps.db, res.locals.account!.id, req.params.id));
  });

  router.get('/charges', async (req, res) => {
    const query = parseWith(listChargesQuerySchema, req.query, 'query');
    res.json(await listChargesPage(deps.db, res.locals.account!.id, query.limit, query.starting_after));
  });

  return router;
}
