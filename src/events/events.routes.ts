import { Router } from 'express';
import { parseWith } from '../validation.ts';
import { listEventsQuerySchema } from './events.schemas.ts';
import type { Events } from './events.service.ts';

export function eventRoutes(deps: { events: Events }): Router {
  const router = Router();

  router.get('/events', async (req, res) => {
    res.json(await deps.events.list(res.locals.account!.id, parseWith(listEventsQuerySchema, req.query, 'query')));
  });

  router.get('/events/:id', async (req, res) => {
    res.json(await deps.events.get(res.locals.account!.id, req.params.id));
  });

  return router;
}
