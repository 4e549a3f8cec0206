import { Router } from 'express';
import { ValidationError } from '../errors.ts';
import { type IdempotentHandler, respondIdempotently } from '../idempotency/idempotency.http.ts';
import { parseIdempotencyKey } from '../idempotency/idempotency.schemas.ts';
import type { Idempotency } from '../idempotency/idempotency.service.ts';
import { parseWith } from '../validation.ts';
import { refusedUrl } from './url-safety.ts';
import { createWebhookEndpointSchema } from './webhooks.schemas.ts';
import type { Webhooks } from './webhooks.service.ts';

export function webhookRoutes(deps: {
  idempotency: Idempotency;
  createEndpoint: IdempotentHandler;
  webhooks: Webhooks;
  allowPrivateUrls: boolean;
  lookupTimeoutMs: number;
}): Router {
  const router = Router();

  // The URL's host is resolved before anything is stored: an address that is not public is refused here,
  // and again at every delivery (a name may resolve elsewhere later). A repeat of a request already made
  // is not checked again: it gets its stored answer, whatever the name resolves to now.
  router.post('/webhook_endpoints', async (req, res) => {
    const key = parseIdempotencyKey(req.get('idempotency-key'));
    const { url } = parseWith(createWebhookEndpointSchema, req.body);
    const refused = await refusedUrl(new URL(url), { allowPrivate: deps.allowPrivateUrls, timeoutMs: deps.lookupTimeoutMs });
    if (refused && !(await deps.idempotency.isRepeat(res.locals.account!.id, key))) {
      throw new ValidationError([{ path: 'url', message: refused }], `Webhooks are not sent to ${url}: ${refused}.`);
    }
    await respondIdempotently(req, res, deps.createEndpoint);
  });

  router.get('/webhook_endpoints', async (_req, res) => {
    res.json(await deps.webhooks.listEndpoints(res.locals.account!.id));
  });

  router.get('/webhook_endpoints/:id', async (req, res) => {
    res.json(await deps.webhooks.getEndpoint(res.locals.account!.id, req.params.id));
  });

  router.delete('/webhook_endpoints/:id', async (req, res) => {
    res.json(await deps.webhooks.deleteEndpoint(res.locals.account!.id, req.params.id));
  });

  // An event's deliveries are webhooks' to tell: events know nothing of who listens to them.
  router.get('/events/:id/deliveries', async (req, res) => {
    res.json(await deps.webhooks.listDeliveries(res.locals.account!.id, req.params.id));
  });

  return router;
}
