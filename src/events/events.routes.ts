import { Router } from 'express';
import type { Webhooks } from '../webhooks/webhooks.service.ts';
import { parseWith } from '../validation.ts';
import { listEventsQuerySchema } from './events.schemas.ts';
import type { Events } from './events.service.ts';

export function eventRoutes(deps: { events: Events; webhooks: Webhooks }): Router {
  const router = Router();

  router.get('/events', async (req, res) => {
    res.json(await deps.events.list(res.locals.account!.id, parseWith(listEventsQuerySchema, req.query, 'query')));
  });

  router.get('/events/:id', async (req, res) => {
    res.json(await deps.events.get(res.locals.account!.id, req.params.id));
  });

  router.get('/events/:id/deliveries', async (req, res) => {
    res.json(await deps.webhooks.listDeliveries(res.locals.account!.id, req.params.id));
  });

  return router;
}
