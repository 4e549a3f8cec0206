import { Router } from 'express';
import { presentAccount } from './accounts.service.ts';

export function accountRoutes(): Router {
  const router = Router();
  router.get('/account', (_req, res) => {
    res.json(presentAccount(res.locals.account!));
  });
  return router;
}
